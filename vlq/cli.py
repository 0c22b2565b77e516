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
from rich.markup import escape
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
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
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
                f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} (set VLQ_DEBUG=1 for the traceback)",
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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from WORK_DIR.partial/ after its last finished layer (same checkpoint and options; identical result)."),
    gpus: int = typer.Option(1, "--gpus", help="Data-parallel processes, one per GPU, each calibrating a share of the samples (same result as one); with --device cpu, CPU processes (gloo). torchrun works too."),
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
        resume=resume, gpus=gpus,
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
    vit_backend: str = typer.Option("torch", help="Image encoder: torch, onnxruntime or tensorrt (needs --vit-dir)."),
    vit_dir: Path = typer.Option(None, "--vit-dir", help="Folder written by vlq export-vit."),
    device: str = typer.Option("auto", help="auto, cuda, cuda:N or cpu."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the generated text."),
    json_out: bool = typer.Option(False, "--json", help="Print text and speed as JSON."),
) -> None:
    """Generate greedily, streaming tokens; prints tokens/s."""
    from vlq.generate import generate

    stream = None if (quiet or json_out) else (lambda piece: console.print(piece, end="", highlight=False))
    result = generate(model, prompt, str(image) if image else None, max_new_tokens, kv_bits, device, stream,
                      vit_backend, str(vit_dir) if vit_dir else None)
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
    work_dir: Path = typer.Option(Path("vlq-demo"), "--work-dir", help="Folder for the generated model and every output."),
    force: bool = typer.Option(False, "--force", help="Re-run every stage (without it, a re-run reuses finished stages)."),
    device: str = typer.Option("auto", help="auto, cuda or cpu."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the gate verdict and where the summary is."),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary and generations as JSON."),
) -> None:
    """The built-in default job (recipes/demo.yaml): built-in VLM -> AWQ on shipped text -> ViT to
    ONNX -> MMBench-format eval of 16-bit and 4-bit -> gate -> summary.md; then both models generate."""
    from dataclasses import asdict

    from vlq.demo import run_demo

    with _progress(quiet or json_out) as progress:
        result = run_demo(work_dir, force, device, _run_hooks(progress, quiet or json_out))
    if json_out:
        print_json({**result.summary.to_dict(), "generations": {"16-bit": asdict(result.fp16_generation),
                                                                 "w4a16": asdict(result.w4_generation)}})
        result.summary.raise_for_gate()
        return
    if not quiet:
        table = Table(title="generation after loading back (greedy)")
        for column in ("model", "folder", "text", "tokens/s"):
            table.add_column(column)
        for name, folder, gen in (("16-bit", result.source, result.fp16_generation),
                                  ("w4a16", result.quantized, result.w4_generation)):
            table.add_row(name, str(folder), repr(gen.text), f"{gen.tokens_per_second:.1f}")
        console.print(table)
    _render_run(result.summary, quiet, json_out=False)


@app.callback()
def _quiet_libraries() -> None:
    """transformers' own progress bars and advice would drown vlq's output; vlq reports what matters."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)


# --- vlq bench gemm (kernels) -------------------------------------------------------------


@bench_app.command("gemm")
@user_errors
def bench_gemm_command(
    shapes: str = typer.Option(
        "4096x4096,4096x11008,11008x4096,8192x28672", help="Comma-separated KxN weight shapes (in x out)."
    ),
    m: str = typer.Option("1,2,4,8,16,32,64,128,256,1024,4096", "--m", help="Comma-separated token counts (M)."),
    dtype: str = typer.Option("float16", help="Activation dtype: float16 or bfloat16 (AutoAWQ runs float16 only)."),
    group_size: int = typer.Option(128, help="AWQ group size of the random 4-bit weights."),
    json_out: Path = typer.Option(None, "--json-out", help="Also write the results as JSON to this file."),
) -> None:
    """Time the w4a16 runner vs fp16 cuBLAS, the 4-bit bandwidth floor and AutoAWQ (needs CUDA)."""
    from vlq.errors import UsageError
    from vlq.kernels.bench import DTYPES, gemm_table, parse_ms, parse_shapes, run_gemm_bench

    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    report = run_gemm_bench(
        parse_shapes(shapes),
        parse_ms(m),
        dtype=DTYPES[dtype],
        group_size=group_size,
        progress=lambda text: err_console.print(f"[dim]{text}[/dim]"),
    )
    console.print(gemm_table(report))
    if json_out:
        json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n")


# --- vlq eval mmbench / vlq eval ppl ------------------------------------------------------


def _mmbench_table(result) -> Table:
    base = result.baseline
    table = Table(title=f"MMBench ({Path(result.data).name}, {result.counts['scored_questions']} questions)")
    for column in ("", "circular", "vanilla") + (("Δ circular (pts)",) if base else ()):
        table.add_column(column, justify="left" if not column else "right")
    for name, value in result.metrics.items():
        cells = [name, f"{100 * value:.2f}", f"{100 * result.metrics_vanilla[name]:.2f}"]
        if base:
            cells.append(f"{100 * base.delta[name]:+.2f}" if name in base.delta else "-")
        table.add_row(*cells, style="bold" if name == "Overall" else None)
    return table


@eval_app.command("mmbench")
@user_errors
def eval_mmbench_command(
    model: str = typer.Argument(
        None, help="16-bit or quantized (vlq/AutoAWQ GEMM) checkpoint folder; omit with --predictions."
    ),
    data: Path = typer.Option(
        None, "--data", help="Local MMBench TSV in VLMEvalKit's layout (e.g. MMBench_DEV_EN.tsv)."
    ),
    predictions: Path = typer.Option(
        None,
        "--predictions",
        help="Score this predictions TSV (data columns + `prediction`) instead of running MODEL.",
    ),
    kv_bits: int = typer.Option(
        16,
        "--kv-bits",
        help="KV cache precision: 16 (transformers' default cache), 8 or 4 (vlq's quantized cache).",
    ),
    limit: int = typer.Option(
        None, "--limit", help="Only the first N questions (each with its circular copies)."
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per forward pass (left-padded)."),
    mode: str = typer.Option(
        "generate",
        "--mode",
        help="generate: greedy short answer + VLMEvalKit matching; logits: option-letter probabilities from one forward pass.",
    ),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Answer length in generate mode."),
    out: Path = typer.Option(
        None,
        "--out",
        help="Folder for predictions, _acc.csv, result JSON and the resume cache (default: vlq-eval/<model name>).",
    ),
    baseline: Path = typer.Option(
        None, "--baseline", help="A previous result JSON of this command to compare with."
    ),
    max_drop: float = typer.Option(
        None,
        "--max-drop",
        help="Fail (exit 4) when circular Overall drops more than this many points below --baseline.",
    ),
    device: str = typer.Option("auto", help="auto, cuda, cuda:N or cpu."),
    dtype: str = typer.Option(
        "auto", help="auto (the checkpoint's; float32 for a float16 one on the CPU), float16 or bfloat16."
    ),
    vit_backend: str = typer.Option("torch", help="Image encoder: torch, onnxruntime or tensorrt (needs --vit-dir)."),
    vit_dir: Path = typer.Option(None, "--vit-dir", help="Folder written by vlq export-vit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; one summary line."),
    json_out: bool = typer.Option(False, "--json", help="Print the result (without per-row data) as JSON."),
) -> None:
    """MMBench accuracy with circular evaluation and VLMEvalKit's exact matching (no LLM judge)."""
    from vlq.eval.mmbench import MmbenchOptions, evaluate_mmbench

    options = MmbenchOptions(
        model=model,
        data=str(data) if data else None,
        predictions=str(predictions) if predictions else None,
        kv_bits=kv_bits,
        limit=limit,
        batch_size=batch_size,
        mode=mode,
        max_new_tokens=max_new_tokens,
        out=str(out) if out else None,
        baseline=str(baseline) if baseline else None,
        max_drop=max_drop,
        vit_backend=vit_backend,
        vit_dir=str(vit_dir) if vit_dir else None,
        device=device,
        dtype=dtype,
    )
    with _progress(quiet or json_out) as progress:
        task = progress.add_task("answering", total=None)
        result = evaluate_mmbench(
            options, on_progress=lambda done, total: progress.update(task, completed=done, total=total)
        )
    if json_out:
        print_json(result.to_dict(with_rows=False))
    elif quiet:
        overall = f"Overall {100 * result.metrics['Overall']:.2f}" if result.scored else "not scored"
        console.print(f"{overall}, {result.unmatched} unmatched, {result.files['result']}", highlight=False)
    else:
        if result.scored:
            console.print(_mmbench_table(result))
        weights = {True: "w4a16", False: "16-bit", None: "predictions file"}[result.quantized]
        console.print(
            f"{result.counts['rows']} rows ({result.counts['reused_from_cache']} from cache), {weights}, "
            f"kv{result.kv_bits}, mode {result.mode}, {result.timing['total_s']:.1f} s",
            highlight=False,
        )
        if result.unmatched:
            from rich.markup import escape

            examples = escape(
                "; ".join(f"{e['index']}: {e['prediction'][:60]!r}" for e in result.unmatched_examples[:3])
            )
            console.print(
                f"[yellow]{result.unmatched} answer(s) matched no option (counted wrong)[/yellow], e.g. {examples}"
            )
        if result.baseline:
            b = result.baseline
            kl = f"{b.mean_kl:.4f}" if b.mean_kl is not None else "n/a"
            verdict = {None: "", True: " [green]gate passed[/green]", False: " [red]gate failed[/red]"}[
                b.passed
            ]
            console.print(
                f"vs {b.baseline}: agreement {100 * b.agreement:.2f}% over {b.common_rows} rows, "
                f"mean KL {kl}, Overall drop {b.overall_drop_points:+.2f} pts{verdict}"
            )
        for note in result.notes + (result.baseline.notes if result.baseline else []):
            console.print(f"note: {note}")
        for kind, path in result.files.items():
            console.print(f"[dim]{kind}: {path}[/dim]")
    result.raise_for_gate()


@eval_app.command("ppl")
@user_errors
def eval_ppl_command(
    model: str = typer.Argument(..., help="16-bit or quantized (vlq/AutoAWQ GEMM) checkpoint folder."),
    dataset: str = typer.Option(
        "wikitext2", "--dataset", help="wikitext2 or ptb (test split shipped with vlq), or a text file."
    ),
    seqlen: int = typer.Option(2048, "--seqlen", help="Tokens per non-overlapping window."),
    max_windows: int = typer.Option(
        None, "--max-windows", help="Stop after this many windows (quick checks)."
    ),
    device: str = typer.Option("auto", help="auto, cuda, cuda:N or cpu."),
    dtype: str = typer.Option(
        "auto", help="auto (the checkpoint's; float32 for a float16 one on the CPU), float16 or bfloat16."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; print only the perplexity."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Perplexity of the language model on a test text (standard non-overlapping windows)."""
    from dataclasses import asdict

    from vlq.eval.ppl import evaluate_ppl

    with _progress(quiet or json_out) as progress:
        task = progress.add_task("windows", total=None)
        result = evaluate_ppl(
            model,
            dataset,
            seqlen,
            max_windows,
            device,
            dtype,
            on_window=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if json_out:
        print_json(asdict(result))
    elif quiet:
        console.print(f"{result.ppl:.4f}", highlight=False)
    else:
        console.print(
            f"perplexity {result.ppl:.4f} on {result.source} ({result.windows} windows x {result.seqlen} "
            f"tokens, {'w4a16' if result.quantized else '16-bit'} weights, {result.seconds:.1f} s)",
            highlight=False,
        )


# --- vlq run (recipes) ----------------------------------------------------------------------


def _run_tables(summary) -> list[Table]:
    """Stages, then accuracy before/after (what summary.md shows, for the terminal)."""
    stages = Table(title=f"vlq run {summary.recipe} -> {summary.out_dir}")
    for column in ("stage", "status", "seconds", "note"):
        stages.add_column(column, justify="right" if column == "seconds" else "left")
    for s in summary.stages:
        stages.add_row(s.name, s.status, f"{s.seconds:.1f}" if s.status == "ran" else "-", s.note)
    tables = [stages]
    base, quant = summary.accuracy.get("baseline") or {}, summary.accuracy.get("quantized") or {}
    if base or quant:
        accuracy = Table(title="MMBench circular accuracy (%)")
        for column in ("", "16-bit", "quantized", "Δ pts"):
            accuracy.add_column(column, justify="left" if not column else "right")
        for name in dict.fromkeys([*base, *quant]):
            b, a = base.get(name), quant.get(name)
            cells = [f"{100 * v:.1f}" if v is not None else "-" for v in (b, a)]
            delta = f"{100 * (a - b):+.1f}" if a is not None and b is not None else "-"
            accuracy.add_row(name, *cells, delta, style="bold" if name == "Overall" else None)
        tables.append(accuracy)
    return tables


@app.command("run")
@user_errors
def run_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/): stages and the options of each."),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Override a recipe key, e.g. --set quantize.calib_samples=32 (repeatable; values are YAML).",
    ),
    model: str = typer.Option(
        None, "--model", help="Checkpoint folder or hub id; overrides the recipe's model."
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Run folder for outputs, vlq_run.json, summary.json and summary.md [default: recipe's out, else vlq-runs/<recipe name>].",
    ),
    skip: list[str] = typer.Option(
        [], "--skip", help="Skip a stage: quantize, export, eval or gate (repeatable)."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Re-run every stage even if unchanged; accept a non-empty --out without an earlier run.",
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Only validate the recipe and overrides and print the resolved settings; no work.",
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress; one line with the verdict (for CI logs)."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the run summary (with --check: the resolved recipe) as JSON on stdout."
    ),
) -> None:
    """Run a recipe: quantize -> export-vit -> eval (16-bit and quantized) -> accuracy gate.

    Stages whose settings and inputs are unchanged since the last run in --out are reused.
    Writes summary.json and summary.md (pull-request ready). Exit 4 when the gate fails.
    """
    from vlq.recipe import load_recipe
    from vlq.run import run_recipe

    loaded = load_recipe(recipe, set_, model=model, out=str(out) if out else None)
    if check:
        if json_out:
            print_json(loaded.to_dict())
        elif quiet:
            console.print(f"{recipe}: ok", highlight=False)
        else:
            import yaml

            console.print(
                f"# {recipe}: valid; resolved settings\n{yaml.safe_dump(loaded.to_dict(), sort_keys=False)}",
                highlight=False,
                end="",
            )
        return
    with _progress(quiet or json_out) as progress:
        summary = run_recipe(loaded, skip=skip, force=force, **_run_hooks(progress, quiet or json_out))
    _render_run(summary, quiet, json_out)


def _run_hooks(progress, silent: bool) -> dict[str, Any]:
    """Callbacks for `run_recipe` / `run_demo_recipe`: stage lines, layer and eval progress bars."""
    on_start, on_layer = _layer_callbacks(progress, "quantizing layers")
    tasks: dict[str, Any] = {}

    def on_progress(which: str, done: int, total: int) -> None:
        if which not in tasks:
            tasks[which] = progress.add_task(f"eval {which}", total=total)
        progress.update(tasks[which], completed=done, total=total)

    def on_stage(name: str, action: str) -> None:
        if not silent:
            err_console.print(f"[bold]>[/bold] {name}: {action}")

    return {"on_stage": on_stage, "on_start": on_start, "on_layer": on_layer, "on_progress": on_progress}


def _render_run(summary, quiet: bool, json_out: bool) -> None:
    """JSON, one line, or tables; then exit 4 (`GateFailed`) if the gate failed."""
    if json_out:
        print_json(summary.to_dict())
    elif quiet:
        verdict = summary.gate.message if summary.gate else "no gate"
        console.print(f"{verdict}; {summary.files['summary_md']}", highlight=False, soft_wrap=True)
    else:
        for table in _run_tables(summary):
            console.print(table)
        if summary.gate is not None:
            colour = "green" if summary.gate.passed else "red"
            console.print(f"[{colour}]gate: {summary.gate.message}[/{colour}]", highlight=False)
        console.print(f"[dim]summary: {summary.files['summary_md']}, {summary.files['summary_json']}[/dim]")
    summary.raise_for_gate()


# --- vlq bench kv (quantized KV cache) ------------------------------------------------------


@bench_app.command("kv")
@user_errors
def bench_kv_command(
    model_shape: str = typer.Option(
        "7b", help="Llama shape with random weights: 7b, 2b (Mini-InternVL-Chat-2B's decoder) or small."
    ),
    batch: str = typer.Option("1", help="Comma-separated batch sizes, e.g. 1,16."),
    tokens: int = typer.Option(None, help="New tokens decoded per run (default 128 on CUDA, 16 on CPU)."),
    prompt_tokens: int = typer.Option(None, help="Prompt tokens prefilled first (default 1024 on CUDA, 128 on CPU)."),
    layers: int = typer.Option(None, help="Decoder layers to build (default: all of the shape's)."),
    backend: str = typer.Option(
        "auto", help="Quantized cache path: auto (CUDA: triton and torch side by side; CPU: torch), triton or torch."
    ),
    json_out: Path = typer.Option(None, "--json-out", help="Also write the results as JSON to this file."),
) -> None:
    """Cache memory and decode speed of the 16-bit, kv8 and kv4 caches in one run (CPU: a small shape)."""
    from vlq.kv.bench import kv_table, parse_batches, run_kv_bench

    report = run_kv_bench(
        model_shape,
        parse_batches(batch),
        new_tokens=tokens,
        prompt_tokens=prompt_tokens,
        layers=layers,
        backend=backend,
        progress=lambda text: err_console.print(f"[dim]{text}[/dim]"),
    )
    console.print(kv_table(report), width=max(console.width, 150))  # 11 columns: unreadable at 80
    if json_out:
        json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n")


# --- vlq export-vit / vlq bench vit (vision encoder export) --------------------------------


def _parity_table(title: str, figures) -> Table:
    table = Table(title=title)
    for column in ("case", "inputs", "max abs", "max rel", "rel L2"):
        table.add_column(column, justify="left" if column in ("case", "inputs") else "right")
    for f in figures:
        shapes = ", ".join("x".join(map(str, shape)) for shape in f.shapes.values())
        table.add_row(f.case, shapes, f"{f.max_abs:.2e}", f"{f.max_rel:.2e}", f"{f.rel_l2:.2e}")
    return table


@app.command("export-vit")
@user_errors
def export_vit_command(
    model: str = typer.Argument(
        ..., help="VLM checkpoint folder (16-bit, or AutoAWQ 4-bit: its vision path is 16-bit)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for vit.onnx and manifest.json (and vit.engine with --trt)."
    ),
    trt: bool = typer.Option(
        False,
        "--trt",
        help="Also build a TensorRT engine (fp16, bf16 where supported), checked against onnxruntime.",
    ),
    dtype: str = typer.Option("fp32", help="ONNX weights and inputs: fp32 or fp16."),
    opset: int = typer.Option(17, help="ONNX opset (14..21)."),
    max_batch: int = typer.Option(
        8, help="Most images per encoder call: TensorRT profile max, largest parity batch."
    ),
    opt_batch: int = typer.Option(
        1, help="Images per call that TensorRT tunes for (1: one image per prompt)."
    ),
    image_sizes: str = typer.Option(
        None,
        help="MIN,OPT,MAX square image sides in pixels, for dynamic-resolution families (qwen2_vl; default 56,448,896).",
    ),
    workspace_gb: float = typer.Option(4.0, help="TensorRT builder workspace, GiB."),
    timing_cache: Path = typer.Option(
        None, help="TensorRT timing cache to read and update [default: OUT/timing.cache]."
    ),
    tolerance: float = typer.Option(
        None, help="Parity gate on max rel = max abs error / max |PyTorch| [default: 1e-3 fp32, 2e-2 fp16]."
    ),
    parity_image: list[Path] = typer.Option(
        None, "--parity-image", help="Image file added to the parity check (repeatable)."
    ),
    simplify: bool = typer.Option(
        True, "--simplify/--no-simplify", help="Shrink the graph with onnxslim when it is installed."
    ),
    device: str = typer.Option(
        "auto", help="auto, cpu, cuda or cuda:N: where the model runs for export and parity."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite a non-empty --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final line."),
    json_out: bool = typer.Option(False, "--json", help="Print manifest.json on stdout."),
) -> None:
    """Export the vision tower + projector (pixels -> LLM embeddings) to ONNX, check parity, optionally TensorRT.

    Dynamic batch; Qwen2-VL/2.5-VL also dynamic patch count (pixel_values + image_grid_thw).
    Parity: onnxruntime vs the VLM's own PyTorch image features on images through the
    checkpoint's processor; above --tolerance nothing is written (exit 4).
    """
    from vlq.export.exporter import ExportOptions, export_vit

    options = ExportOptions(
        model=model,
        out=str(out),
        dtype=dtype,
        opset=opset,
        max_batch=max_batch,
        opt_batch=opt_batch,
        image_sizes=image_sizes,
        trt=trt,
        workspace_gb=workspace_gb,
        timing_cache=str(timing_cache) if timing_cache else None,
        device=device,
        tolerance=tolerance,
        simplify=simplify,
        images=[str(p) for p in parity_image or ()],
        force=force,
    )
    silent = quiet or json_out
    result = export_vit(
        options, on_stage=lambda s: silent or err_console.print(f"[bold]>[/bold] {s}", highlight=False)
    )
    m = result.manifest
    if json_out:
        print_json(m)
        return
    if not quiet:
        console.print(
            _parity_table(
                f"parity: onnxruntime vs PyTorch ({m['dtype']}, gate max rel "
                f"{m['parity']['tolerance_max_rel']:.0e})",
                result.parity,
            )
        )
        if result.trt_parity:
            console.print(_parity_table("parity: TensorRT vs onnxruntime", result.trt_parity))
        for name, r in m["profile"]["inputs"].items():
            console.print(f"profile {name}: min {r['min']} opt {r['opt']} max {r['max']}", highlight=False)
        console.print(
            f"graph: {m['graph']['nodes']} nodes, opset {m['graph']['opset']}, {m['graph']['simplified']}",
            highlight=False,
        )
    engine = f" + {m['tensorrt']['engine']}" if m.get("tensorrt") else ""
    console.print(
        f"wrote [bold]{result.out}[/bold] ({', '.join(m['files'])}{engine}, manifest.json) in "
        f"{result.seconds:.1f}s",
        highlight=False,
    )


@bench_app.command("vit")
@user_errors
def bench_vit_command(
    model: str = typer.Argument(..., help="VLM checkpoint folder."),
    vit_dir: Path = typer.Option(
        None, "--vit-dir", help="Folder from vlq export-vit [default: export to a temp folder]."
    ),
    backends: str = typer.Option(
        "torch,onnxruntime,tensorrt", help="Comma-separated: torch, onnxruntime, tensorrt."
    ),
    batch_sizes: str = typer.Option("1,4,8", help="Comma-separated images per call."),
    image_size: int = typer.Option(
        None, help="Square image side for dynamic-resolution families [default: 448]."
    ),
    warmup: int = typer.Option(2, help="Untimed calls first."),
    iters: int = typer.Option(10, help="Timed calls per backend and batch."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("fp32", help="fp32 or fp16 (torch path and the temporary export)."),
    json_out: Path = typer.Option(None, "--json-out", help="Also write the results as JSON to this file."),
) -> None:
    """Vision-encoder latency and images/s per backend and batch size, in one table."""

    from vlq.export.bench import bench_vit, parse_batch_sizes, vit_table

    result = bench_vit(
        model,
        str(vit_dir) if vit_dir else None,
        [b.strip() for b in backends.split(",") if b.strip()],
        parse_batch_sizes(batch_sizes),
        image_size,
        warmup,
        iters,
        device,
        dtype,
        on_stage=lambda text: err_console.print(f"[dim]{text}[/dim]", highlight=False),
    )
    console.print(vit_table(result))
    if json_out:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def main() -> None:
    app()
