"""Command line: parses options, calls one library function, renders the result. No logic here."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from vlq.errors import EXIT_INTERNAL, VlqError

app = typer.Typer(
    help="vlq: quantize, export and evaluate vision-language models.\n\n"
    "Exit codes: 0 success, 1 internal error, 2 usage error, 3 input error, 4 accuracy gate failed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Side-by-side benchmarks (GPU figures need a CUDA device).", no_args_is_help=True)
eval_app = typer.Typer(help="Accuracy checks: MMBench and perplexity.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(eval_app, name="eval")

console = Console()
err_console = Console(stderr=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a `VlqError` into one red line on stderr and its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VlqError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/red]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug: keep it to one line unless asked for the traceback
            if os.environ.get("VLQ_DEBUG"):
                raise
            err_console.print(
                f"[red]internal error:[/red] {type(exc).__name__}: {exc} (set VLQ_DEBUG=1 for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, nothing else mixed in."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# --- commands are registered below, one block each -------------------------------------------


def main() -> None:
    app()
