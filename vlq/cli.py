"""Command line: parses options, calls one library function, renders the result. No logic here."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

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


def _progress(quiet: bool):
    """A rich progress bar with ETA on stderr, or nothing with --quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), console=err_console, disable=quiet, transient=False,
    )


def _layer_callbacks(progress, label: str):
    """`on_start` / `on_layer` hooks that drive one progress task per decoder layer."""
    state: dict = {}

    def on_start(n_layers: int) -> None:
        state["task"] = progress.add_task(label, total=n_layers)

    def on_layer(report) -> None:
        progress.update(
            state["task"], advance=1,
            description=f"{label} (layer {report.index}: err {report.rtn_error:.2e} -> {report.awq_error:.2e})",
        )

    return on_start, on_layer


def _layers_table(result) -> Table:
    table = Table(title=f"AWQ w{result.options['w_bits']} g{result.options['w_group_size']} ({result.family})")
    for column in ("layer", "seconds", "RTN error", "AWQ error", "peak MiB"):
        table.add_column(column, justify="right")
    for r in result.layers:
        peak = f"{r.peak_device_mib:.0f}" if r.peak_device_mib is not None else "-"
        table.add_row(str(r.index), f"{r.seconds:.2f}", f"{r.rtn_error:.3e}", f"{r.awq_error:.3e}", peak)
    return table


@app.command("auto-awq")
@user_errors
def auto_awq_command(
    model: str = typer.Argument(..., help="Checkpoint folder (config.json + safetensors), or a hub id when online."),
    work_dir: Path = typer.Option(None, "--work-dir", help="Output folder for the 4-bit model [default: MODEL-w4a16]."),
    calib_dataset: str = typer.Option("ptb", help="ptb, wikitext2, c4, pileval (hub when reachable, else shipped text where there is one), or a .txt/.jsonl file."),
    calib_samples: int = typer.Option(128, help="Number of calibration samples."),
    calib_seqlen: int = typer.Option(2048, help="Tokens per calibration sample."),
    batch_size: int = typer.Option(1, help="Samples per forward chunk: smaller uses less device memory, same result."),
    w_bits: int = typer.Option(4, help="Weight bits (AutoAWQ's GEMM format holds 4)."),
    w_group_size: int = typer.Option(128, help="Input channels per quantization group; must divide every quantized linear's in_features."),
    search_scale: bool = typer.Option(False, "--search-scale/--no-search-scale", help="AWQ grid search of the scale exponent (20 points, minimizing the block's output error); off: scales from activation and weight statistics alone (LMDeploy's default)."),
    search_clip: bool = typer.Option(True, "--search-clip/--no-search-clip", help="Search per-group weight clipping thresholds."),
    device: str = typer.Option("auto", help="auto (cuda when present), cuda, cuda:N or cpu: where each layer is calibrated."),
    dtype: str = typer.Option("auto", help="auto (the checkpoint's dtype), float16 or bfloat16."),
    force: bool = typer.Option(False, "--force", help="Overwrite a non-empty --work-dir."),
    seed: int = typer.Option(0, help="Seed for drawing calibration samples."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table (for CI logs)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """AWQ 4-bit weight quantization of a VLM's language model, one decoder layer at a time.

    Vision tower, projector, embeddings and lm_head stay 16 bit. Writes an AutoAWQ GEMM folder
    (safetensors + quantization_config) and vlq_report.json.
    """
    from vlq.awq.pipeline import AutoAwqOptions, auto_awq, report_dict

    out = work_dir or Path(f"{model.rstrip('/')}-w4a16")
    options = AutoAwqOptions(
        model=model, work_dir=str(out), calib_dataset=calib_dataset, calib_samples=calib_samples,
        calib_seqlen=calib_seqlen, batch_size=batch_size, w_bits=w_bits, w_group_size=w_group_size,
        search_scale=search_scale, search_clip=search_clip, device=device, dtype=dtype, force=force, seed=seed,
    )
    with _progress(quiet or json_out) as progress:
        on_start, on_layer = _layer_callbacks(progress, "quantizing layers")
        result = auto_awq(options, on_start=on_start, on_layer=on_layer)
    if json_out:
        print_json(report_dict(result))
    elif not quiet:
        console.print(_layers_table(result))
        console.print(f"wrote [bold]{result.output_dir}[/bold] ({result.quantized_linears} linears at 4 bit, "
                      f"kept 16-bit: {', '.join(result.modules_to_not_convert)}) in {result.seconds:.1f}s")


@app.command("inspect")
@user_errors
def inspect_command(
    model: str = typer.Argument(..., help="Checkpoint folder or hub id."),
    w_group_size: int = typer.Option(128, help="Group size to check divisibility and estimate size with."),
    json_out: bool = typer.Option(False, "--json", help="Print the resolution as JSON."),
) -> None:
    """Dry run: detected family, layers, scale groups, what is quantized and skipped, expected size."""
    from dataclasses import asdict

    from vlq.inspect import inspect_model

    report = inspect_model(model, w_group_size)
    if json_out:
        print_json(asdict(report))
        return
    console.print(f"[bold]{report.architecture}[/bold]: family [bold]{report.family}[/bold], "
                  f"{report.num_layers} decoder layers at {report.layers_path}")
    table = Table(title="scale groups (per decoder layer)")
    table.add_column("previous op")
    table.add_column("linears")
    table.add_column("inspected module")
    for g in report.scale_groups:
        table.add_row(g.prev, ", ".join(g.linears), g.inspect)
    console.print(table)
    console.print(f"quantized per layer: {', '.join(report.quantized_per_layer)}")
    console.print(f"kept 16-bit (modules_to_not_convert): {', '.join(report.modules_to_not_convert)}")
    console.print(f"parameters: {report.params_total:,} total, {report.params_quantized:,} quantized; "
                  f"size {report.bytes_16bit / 2**20:.1f} MiB -> about {report.bytes_quantized / 2**20:.1f} MiB")
    for note in report.notes:
        console.print(f"note: {note}")


@app.command("generate")
@user_errors
def generate_command(
    model: str = typer.Argument(..., help="16-bit or quantized (AutoAWQ GEMM) checkpoint folder."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="User message."),
    image: Path = typer.Option(None, "--image", help="Image file to put before the prompt."),
    max_new_tokens: int = typer.Option(32, help="Tokens to generate (greedy)."),
    kv_bits: int = typer.Option(16, help="KV cache precision: 16, 8 or 4."),
    device: str = typer.Option("auto", help="auto, cuda, cuda:N or cpu."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the generated text."),
    json_out: bool = typer.Option(False, "--json", help="Print text and speed as JSON."),
) -> None:
    """Generate greedily, streaming tokens; prints tokens/s."""
    from vlq.generate import generate

    stream = None if (quiet or json_out) else (lambda piece: console.print(piece, end="", highlight=False))
    result = generate(model, prompt, str(image) if image else None, max_new_tokens, kv_bits, device, stream)
    if json_out:
        print_json({"text": result.text, "new_tokens": result.new_tokens, "seconds": result.seconds,
                    "tokens_per_second": result.tokens_per_second, "quantized": result.quantized, "kv_bits": kv_bits})
    elif quiet:
        console.print(result.text, highlight=False)
    else:
        console.print(f"\n[dim]{result.new_tokens} tokens, {result.tokens_per_second:.1f} tokens/s "
                      f"({'w4a16' if result.quantized else '16-bit'} weights, kv{kv_bits})[/dim]")


@app.command("demo")
@user_errors
def demo_command(
    work_dir: Path = typer.Option(Path("vlq-demo"), "--work-dir", help="Folder for the generated model and outputs."),
    force: bool = typer.Option(False, "--force", help="Overwrite a non-empty --work-dir."),
    device: str = typer.Option("auto", help="auto, cuda or cpu."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary."),
) -> None:
    """The built-in default job: tiny generated VLM -> AWQ on shipped text -> load back -> generate."""
    from vlq.demo import run_demo

    with _progress(quiet) as progress:
        on_start, on_layer = _layer_callbacks(progress, "quantizing layers")
        result = run_demo(work_dir, force, device, on_stage=lambda s: quiet or err_console.print(f"[bold]>[/bold] {s}"),
                          on_start=on_start, on_layer=on_layer)
    if not quiet:
        console.print(_layers_table(result.quantized))
    table = Table(title="vlq demo summary")
    table.add_column("model")
    table.add_column("folder")
    table.add_column("generation (greedy)")
    table.add_column("tokens/s", justify="right")
    for name, folder, gen in (("16-bit", result.source, result.fp16_generation),
                              ("w4a16", result.quantized.output_dir, result.w4_generation)):
        table.add_row(name, str(folder), repr(gen.text), f"{gen.tokens_per_second:.1f}")
    console.print(table)


@app.callback()
def _quiet_libraries() -> None:
    """transformers' own progress bars and advice would drown vlq's output; vlq reports what matters."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)


def main() -> None:
    app()
