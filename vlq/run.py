"""`vlq run RECIPE`: quantize -> export-vit -> eval (16-bit baseline and quantized) -> gate.

Each stage is a small adapter: recipe section in, one library call (`auto_awq`, the ViT export,
`evaluate_mmbench`, `compare_runs` + `apply_gate`), a `StageResult` out. The runner adds what CI
needs around them:

- **Skip what is done.** Every stage has a fingerprint: a hash of its settings and of its
  inputs' identity (the checkpoint folder's files, names + sizes + mtimes; the data file; the
  fingerprint of the stage whose output it reads). A stage whose fingerprint matches the one
  recorded in `vlq_run.json` and whose outputs are all present is reused, so re-running a recipe
  after changing only `eval.kv_bits` re-runs only the quantized evaluation and the gate. A
  stage is recorded as started before it runs, so a killed run never looks finished; a killed
  quantize stage re-run with the same fingerprint continues after its last finished layer
  (`auto_awq`'s resume).
- **Plan before work.** Inputs are resolved, fingerprints computed and every dependency checked
  before the first stage starts: a skipped stage whose output a later stage needs is an error now,
  not after an hour of calibration.
- **Leave a record.** `summary.json` and `summary.md` (accuracy per category before/after, sizes,
  times; fit for a pull-request comment) are written at the end, also when the gate fails or a
  stage raises, so a CI job always has something to show.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlq import __version__
from vlq.awq.partial import STATE_NAME as PARTIAL_STATE
from vlq.awq.partial import partial_dir
from vlq.awq.pipeline import REPORT_NAME, AutoAwqOptions, auto_awq
from vlq.errors import GateFailed, InputError, UsageError, require_packages
from vlq.eval.mmbench import MmbenchOptions, evaluate_mmbench
from vlq.eval.scoring import apply_gate, compare_runs, gate_failure
from vlq.models.loading import resolve_device
from vlq.output import atomic_dir, write_json
from vlq.recipe import REFERENCE, STAGES, SYNTHETIC_DATA, TINY_PREFIX, Recipe

STATE_NAME = "vlq_run.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
#: Bump when a stage's meaning changes: every recorded fingerprint then stops matching.
FINGERPRINT_VERSION = 1
SYNTHETIC_QUESTIONS = 12
#: Files that count towards a checkpoint's size.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

RAN, REUSED, SKIPPED, FAILED = "ran", "reused", "skipped", "failed"


@dataclass
class StageResult:
    """What one stage did in this run (`ran`, `reused` unchanged outputs, `skipped`, `failed`)."""

    name: str
    status: str
    seconds: float = 0.0
    fingerprint: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class GateResult:
    passed: bool
    max_drop: float
    drop_points: float
    agreement: float | None
    mean_kl: float | None
    message: str


@dataclass
class RunSummary:
    recipe: str
    description: str
    out_dir: str
    model: str
    settings: dict[str, Any]
    stages: list[StageResult]
    #: `baseline` / `quantized` -> circular accuracy per name (fractions: Overall, groups, categories).
    accuracy: dict[str, dict[str, float | None]]
    #: Bytes: `model_16bit`, `quantized`, `vit` (None where that stage produced nothing).
    sizes: dict[str, int | None]
    gate: GateResult | None
    seconds: float
    files: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    vlq_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    def raise_for_gate(self) -> None:
        """`GateFailed` (exit code 4) when the gate ran and failed: the artifact must not ship."""
        if self.gate is not None and not self.gate.passed:
            raise GateFailed(self.gate.message)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# --- the run's context: resolved inputs, recorded state, callbacks --------------------------------


@dataclass
class RunContext:
    recipe: Recipe
    out: Path
    model: str
    data: Path | None
    #: Stage name -> record from the previous run (`vlq_run.json`).
    state: dict[str, dict]
    #: Stage name -> fingerprint in this run (planned before any work).
    fingerprints: dict[str, str] = field(default_factory=dict)
    #: Stages an earlier run started with the same fingerprint and did not finish (quantize resumes).
    interrupted: set[str] = field(default_factory=set)
    results: dict[str, StageResult] = field(default_factory=dict)
    on_start: Callable[[int], None] = lambda n: None
    on_layer: Callable = lambda report: None
    on_progress: Callable[[str, int, int], None] = lambda stage, done, total: None

    def path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.out / path

    def output(self, stage: str, key: str) -> Path:
        """An output path of a finished (or reused) stage."""
        record = self.results.get(stage)
        if record is None or key not in record.outputs:
            raise InputError(f"stage {stage} has no output {key!r} in {self.out}")
        return Path(record.outputs[key])


def folder_identity(path: str | Path) -> dict:
    """A local folder by its files (name, size, mtime: cheap, and any rewrite changes it); a hub id by name.

    The folder's own path is left out, so a run folder copied elsewhere (mtimes kept) still reuses.
    """
    folder = Path(path)
    if not folder.is_dir():
        return {"hub_id": str(path)}
    return {"files": [file_identity(p) for p in sorted(folder.iterdir()) if p.is_file()]}


def file_identity(path: Path) -> list:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def fingerprint(stage: str, settings: dict, inputs: dict) -> str:
    """16 hex digits over the stage's settings, its inputs' identity and vlq's version (new code, new outputs)."""
    payload = {
        "stage": stage,
        "version": [FINGERPRINT_VERSION, __version__],
        "settings": settings,
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_bytes(path: Path, suffixes: tuple[str, ...] | None = None) -> int | None:
    if not path.is_dir():
        return None
    return sum(
        p.stat().st_size
        for p in path.rglob("*")
        if p.is_file() and (suffixes is None or p.suffix in suffixes)
    )


# --- stages: inputs (for the fingerprint), outputs, and the adapter that does the work ------------


@dataclass(frozen=True)
class Stage:
    name: str
    #: The `stages:` / `--skip` name that selects it (both evaluations are `eval`).
    group: str
    #: Stages whose outputs this one reads.
    needs: tuple[str, ...]
    settings: Callable[[RunContext], dict]
    inputs: Callable[[RunContext], dict]
    outputs: Callable[[RunContext], dict[str, Path]]
    run: Callable[[RunContext], dict]
    #: False: always run (cheap, and its verdict must reflect the files as they are now).
    cached: bool = True


def _section(name: str) -> Callable[[RunContext], dict]:
    return lambda ctx: asdict(ctx.recipe.section(name))


def _quantize_outputs(ctx: RunContext) -> dict[str, Path]:
    folder = ctx.out / "quantized"
    return {"folder": folder, "config": folder / "config.json", "report": folder / REPORT_NAME}


def _run_quantize(ctx: RunContext) -> dict:
    folder = _quantize_outputs(ctx)["folder"]
    # Same settings and checkpoint as a run that was killed: continue after its last finished layer.
    resume = "quantize" in ctx.interrupted and (partial_dir(folder) / PARTIAL_STATE).is_file()
    options = AutoAwqOptions(
        model=ctx.model, work_dir=str(folder), force=True, resume=resume, **asdict(ctx.recipe.quantize)
    )
    result = auto_awq(options, on_start=ctx.on_start, on_layer=ctx.on_layer)
    layers = result.layers
    return {
        "family": result.family,
        "quantized_linears": result.quantized_linears,
        "calibration_source": result.calibration_source,
        "mean_rtn_error": sum(r.rtn_error for r in layers) / max(len(layers), 1),
        "mean_awq_error": sum(r.awq_error for r in layers) / max(len(layers), 1),
        "quantize_seconds": result.seconds,
        "resumed_layers": result.resumed_layers,
    }


def _export_outputs(ctx: RunContext) -> dict[str, Path]:
    folder = ctx.path(ctx.recipe.export.out)
    return {"folder": folder, "manifest": folder / "manifest.json"}


def _run_export(ctx: RunContext) -> dict:
    from vlq.export.exporter import ExportOptions, export_vit

    settings = asdict(ctx.recipe.export)
    sizes = settings.pop("image_sizes")
    if isinstance(sizes, list):
        sizes = ",".join(str(v) for v in sizes)
    settings["out"] = str(_export_outputs(ctx)["folder"])
    result = export_vit(ExportOptions(model=ctx.model, image_sizes=sizes, force=True, **settings))
    figures = result.parity + result.trt_parity
    return {
        "kind": result.manifest.get("kind"),
        "dtype": result.manifest.get("dtype"),
        "parity_max_rel": max((f.max_rel for f in result.parity), default=None),
        "tensorrt": bool(result.manifest.get("tensorrt")),
        "parity_cases": len(figures),
        "export_seconds": result.seconds,
    }


def _eval_settings(ctx: RunContext, quantized: bool) -> dict:
    settings = asdict(ctx.recipe.eval)
    settings.pop("max_drop")  # only the gate reads it: changing it must not re-run an evaluation
    settings.pop("data")  # the resolved file is an input (its identity is in the fingerprint)
    if not quantized:
        settings["kv_bits"] = 16  # the baseline is the all-16-bit model
    return settings


def _eval_outputs(which: str) -> Callable[[RunContext], dict[str, Path]]:
    def outputs(ctx: RunContext) -> dict[str, Path]:
        folder = ctx.out / "eval" / which
        return {"folder": folder, "result": folder / f"{ctx.data.stem}_result.json"}

    return outputs


def _run_eval(which: str) -> Callable[[RunContext], dict]:
    def run(ctx: RunContext) -> dict:
        quantized = which == "quantized"
        model = str(ctx.output("quantize", "folder")) if quantized else ctx.model
        settings = _eval_settings(ctx, quantized)
        options = MmbenchOptions(
            model=model, data=str(ctx.data), out=str(_eval_outputs(which)(ctx)["folder"]), **settings
        )
        result = evaluate_mmbench(
            options, on_progress=lambda done, total: ctx.on_progress(which, done, total)
        )
        return {
            "metrics": result.metrics,
            "metrics_vanilla": result.metrics_vanilla,
            "counts": result.counts,
            "unmatched": result.unmatched,
            "kv_bits": result.kv_bits,
            "mode": result.mode,
        }

    return run


def _read_result(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _run_gate(ctx: RunContext) -> dict:
    """`vlq eval mmbench --baseline --max-drop`'s own comparison, on the two result files as they are."""
    baseline_path = ctx.output("eval-baseline", "result")
    comparison = compare_runs(
        _read_result(ctx.output("eval-quantized", "result")),
        _read_result(baseline_path),
        "the 16-bit baseline",
    )
    apply_gate(comparison, ctx.recipe.eval.max_drop)
    message = (
        str(gate_failure(comparison))
        if not comparison.passed
        else (
            f"MMBench Overall dropped {comparison.overall_drop_points:.2f} points "
            f"(--max-drop {comparison.max_drop:g}): passed"
        )
    )
    return {
        "passed": comparison.passed,
        "max_drop": comparison.max_drop,
        "drop_points": comparison.overall_drop_points,
        "agreement": comparison.agreement,
        "mean_kl": comparison.mean_kl,
        "message": message,
        "notes": comparison.notes,
    }


def _upstream(*names: str) -> Callable[[RunContext], dict]:
    return lambda ctx: {name: ctx.fingerprints[name] for name in names}


PIPELINE: tuple[Stage, ...] = (
    Stage(
        "quantize",
        "quantize",
        (),
        _section("quantize"),
        lambda ctx: {"model": folder_identity(ctx.model)},
        _quantize_outputs,
        _run_quantize,
    ),
    Stage(
        "export",
        "export",
        (),
        _section("export"),
        lambda ctx: {"model": folder_identity(ctx.model)},
        _export_outputs,
        _run_export,
    ),
    Stage(
        "eval-baseline",
        "eval",
        (),
        lambda ctx: _eval_settings(ctx, False),
        lambda ctx: {"model": folder_identity(ctx.model), "data": file_identity(ctx.data)},
        _eval_outputs("baseline"),
        _run_eval("baseline"),
    ),
    Stage(
        "eval-quantized",
        "eval",
        ("quantize",),
        lambda ctx: _eval_settings(ctx, True),
        lambda ctx: {**_upstream("quantize")(ctx), "data": file_identity(ctx.data)},
        _eval_outputs("quantized"),
        _run_eval("quantized"),
    ),
    Stage(
        "gate",
        "gate",
        ("eval-baseline", "eval-quantized"),
        lambda ctx: {"max_drop": ctx.recipe.eval.max_drop},
        _upstream("eval-baseline", "eval-quantized"),
        lambda ctx: {},
        _run_gate,
        cached=False,
    ),
)


# --- preparing inputs, planning, running -----------------------------------------------------------


def default_out(recipe: Recipe) -> Path:
    return Path("vlq-runs") / (Path(recipe.source).stem or "recipe")


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / STATE_NAME).is_file() and not force:
        raise InputError(f"--out {out} is not empty and holds no vlq run; pass --force to use it anyway")


def _read_state(out: Path) -> dict[str, dict]:
    path = out / STATE_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}  # a damaged record: every stage simply runs again
    return data.get("stages", {}) if isinstance(data, dict) else {}


def _write_state(ctx: RunContext) -> None:
    """Record finished stages, and started ones as incomplete (a killed run must not look finished)."""
    stages = dict(ctx.state)
    for name, result in ctx.results.items():
        if name == "gate":
            continue
        if result.status == FAILED:  # started, not (yet) finished
            stages[name] = {"fingerprint": result.fingerprint, "complete": False}
        elif result.status in (RAN, REUSED):
            stages[name] = {
                "fingerprint": result.fingerprint,
                "complete": True,
                "outputs": result.outputs,
                "details": result.details,
                "seconds": result.seconds if result.status == RAN else stages.get(name, {}).get("seconds"),
            }
    write_json(ctx.out / STATE_NAME, {"vlq_version": __version__, "stages": stages})


def resolve_model(recipe: Recipe, out: Path) -> str:
    """The checkpoint the run reads: a local folder, a hub id, or a tiny model generated in `out`."""
    model = recipe.model
    if not model:
        raise UsageError(f"{recipe.source}: no model: set model: in the recipe or pass --model PATH")
    if model == REFERENCE:
        from vlq.reference import reference_model_dir

        return str(reference_model_dir())
    if model.startswith(TINY_PREFIX):
        from vlq.tiny import TINY_BUILDERS

        name = model[len(TINY_PREFIX) :]
        if name not in TINY_BUILDERS:
            raise UsageError(
                f"model {model}: built-in tiny models are {', '.join(TINY_PREFIX + n for n in TINY_BUILDERS)}"
            )
        folder = out / f"tiny-{name.replace('_', '-')}"
        if not (folder / "config.json").is_file():  # built once: rebuilding would change its identity
            with atomic_dir(folder) as tmp:
                TINY_BUILDERS[name](tmp)
        return str(folder)
    path = Path(model)
    if path.exists() and not (path / "config.json").is_file():
        raise InputError(f"model {model}: no config.json in it (not a checkpoint folder)")
    if not path.exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise InputError(f"model {model} does not exist")
    return model


def resolve_data(recipe: Recipe, out: Path) -> Path | None:
    data = recipe.eval.data
    if data is None:
        return None
    if data == REFERENCE:
        from vlq.reference import reference_mmbench_tsv

        return reference_mmbench_tsv()
    if data == SYNTHETIC_DATA:
        from vlq.eval.synth import synth_mmbench

        path = out / "data" / "synthetic_mmbench.tsv"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            synth_mmbench(tmp, questions=SYNTHETIC_QUESTIONS, seed=0)
            tmp.replace(path)
        return path
    path = Path(data)
    if not path.is_file():
        raise InputError(f"eval.data {data} does not exist (vlq never downloads MMBench)")
    return path


def _selected(recipe: Recipe, skip: Sequence[str]) -> set[str]:
    for name in skip:
        if name not in STAGES:
            raise UsageError(f"--skip {name}: stages are {', '.join(STAGES)}")
    return {s for s in recipe.stages if s not in skip}


def plan(ctx: RunContext, selected: set[str], force: bool) -> dict[str, str]:
    """Stage -> what happens to it (`run`, `reuse`, `skip`), fingerprints filled in; no work done.

    A stage that is not selected may still feed one that is: then its recorded outputs must be
    complete, and its recorded fingerprint stands in for it.
    """
    actions: dict[str, str] = {}
    for stage in PIPELINE:
        missing = [n for n in stage.needs if actions[n] == "skip" and n not in ctx.fingerprints]
        if stage.group not in selected:
            actions[stage.name] = "skip"
            record = ctx.state.get(stage.name)
            if record and stage.cached and _complete(stage, ctx, record):
                ctx.fingerprints[stage.name] = record["fingerprint"]
            continue
        if missing:
            raise InputError(
                f"stage {stage.name} needs the output of {missing[0]}, which is skipped and has no complete "
                f"earlier result in {ctx.out}; run it (remove it from --skip / add it to stages:)"
            )
        ctx.fingerprints[stage.name] = fingerprint(
            stage.name, _resolved(stage.settings(ctx)), stage.inputs(ctx)
        )
        record = ctx.state.get(stage.name)
        if record is not None and record.get("fingerprint") == ctx.fingerprints[stage.name]:
            if not record.get("complete"):
                ctx.interrupted.add(stage.name)
        unchanged = (
            record is not None
            and record.get("fingerprint") == ctx.fingerprints[stage.name]
            and _complete(stage, ctx, record)
        )
        actions[stage.name] = "reuse" if stage.cached and unchanged and not force else "run"
    return actions


def _resolved(settings: dict) -> dict:
    """`device: auto` as what it means on this machine, so `auto` and `cpu` on a CPU box are the same run."""
    if settings.get("device") != "auto":
        return settings
    return {**settings, "device": resolve_device("auto").type}


def _complete(stage: Stage, ctx: RunContext, record: dict) -> bool:
    """Every output where this run expects it (recorded paths are informative: the folder may have moved)."""
    return record.get("complete") is True and all(Path(p).exists() for p in stage.outputs(ctx).values())


def check_dependencies(selected: set[str], state: dict[str, dict], out: Path) -> None:
    """Before any work: a selected stage that reads a skipped one's output needs an earlier record of it."""
    for stage in PIPELINE:
        if stage.group not in selected:
            continue
        for need in stage.needs:
            group = next(s.group for s in PIPELINE if s.name == need)
            if group not in selected and not state.get(need, {}).get("complete"):
                raise InputError(
                    f"stage {stage.name} needs the output of {need}, which is skipped and has no earlier result "
                    f"in {out}; run {group} (remove it from --skip / add it to stages:)"
                )


def run_recipe(
    recipe: Recipe,
    skip: Sequence[str] = (),
    force: bool = False,
    on_stage: Callable[[str, str], None] = lambda stage, action: None,
    on_start: Callable[[int], None] = lambda n: None,
    on_layer: Callable = lambda report: None,
    on_progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
) -> RunSummary:
    """Run a validated recipe's stages, reusing unchanged ones; write summary.json and summary.md.

    Returns even when the gate fails (the summary says so): call `summary.raise_for_gate()` to
    turn that into `GateFailed`. `force` re-runs every selected stage and accepts a non-empty
    `out` that holds no earlier run. `on_stage(name, action)` reports `run`/`reuse`/`skip` before
    each stage.
    """
    start = time.perf_counter()
    out = Path(recipe.out) if recipe.out else default_out(recipe)
    selected = _selected(recipe, skip)
    _check_out(out, force)
    state = _read_state(out)
    check_dependencies(selected, state, out)
    out.mkdir(parents=True, exist_ok=True)
    needs_eval = bool(selected & {"eval", "gate"})
    data = resolve_data(recipe, out) if needs_eval else None  # a missing file fails before a model is built
    if needs_eval and data is None:
        raise UsageError(f"{recipe.source}: eval.data is not set")
    ctx = RunContext(
        recipe,
        out,
        resolve_model(recipe, out),
        data,
        state,
        on_start=on_start,
        on_layer=on_layer,
        on_progress=on_progress,
    )
    actions = plan(ctx, selected, force)
    if actions["export"] == "run":  # before hours of quantization, not after
        from vlq.export.runtime import EXPORT_PACKAGES

        require_packages(EXPORT_PACKAGES, "export", "the recipe's export stage")

    error = None
    try:
        for stage in PIPELINE:
            _run_stage(stage, actions[stage.name], ctx, on_stage)
    except BaseException as exc:
        error = exc
        raise
    finally:
        summary = _summarize(ctx, time.perf_counter() - start, error)
        write_summary(summary, out)
    return summary


def _run_stage(stage: Stage, action: str, ctx: RunContext, on_stage: Callable[[str, str], None]) -> None:
    on_stage(stage.name, action)
    fp = ctx.fingerprints.get(stage.name)
    outputs = {k: str(v) for k, v in stage.outputs(ctx).items()}
    if action == "skip":
        record = ctx.state.get(stage.name)
        if fp is not None and record:  # not run, but its earlier output feeds a later stage
            ctx.results[stage.name] = StageResult(
                stage.name, SKIPPED, 0.0, fp, outputs, record.get("details", {}), "earlier output used"
            )
        else:
            ctx.results[stage.name] = StageResult(stage.name, SKIPPED)
        return
    if action == "reuse":
        record = ctx.state[stage.name]
        ctx.results[stage.name] = StageResult(
            stage.name, REUSED, 0.0, fp, outputs, record.get("details", {}), "inputs and settings unchanged"
        )
        return
    began = time.perf_counter()
    ctx.results[stage.name] = StageResult(stage.name, FAILED, 0.0, fp, outputs)
    _write_state(ctx)
    details = stage.run(ctx)
    ctx.results[stage.name] = StageResult(stage.name, RAN, time.perf_counter() - began, fp, outputs, details)
    _write_state(ctx)


# --- summary ----------------------------------------------------------------------------------------


def _summarize(ctx: RunContext, seconds: float, error: BaseException | None) -> RunSummary:
    results = [ctx.results.get(s.name) or StageResult(s.name, SKIPPED, note="not reached") for s in PIPELINE]
    if error is not None:
        for r in results:
            if r.status == FAILED:
                r.note = str(error) or type(error).__name__
    by_name = {r.name: r for r in results}
    accuracy = {
        which: by_name[f"eval-{which}"].details.get("metrics")
        for which in ("baseline", "quantized")
        if by_name[f"eval-{which}"].details.get("metrics")
    }
    gate_details = by_name["gate"].details if by_name["gate"].status == RAN else {}
    gate = (
        GateResult(**{k: gate_details[k] for k in GateResult.__dataclass_fields__}) if gate_details else None
    )
    quantized, vit = by_name["quantize"].outputs.get("folder"), by_name["export"].outputs.get("folder")
    sizes = {
        "model_16bit": folder_bytes(Path(ctx.model), WEIGHT_SUFFIXES),
        "quantized": folder_bytes(Path(quantized), WEIGHT_SUFFIXES) if quantized else None,
        "vit": folder_bytes(Path(vit)) if vit and by_name["export"].status != SKIPPED else None,
    }
    return RunSummary(
        recipe=ctx.recipe.source,
        description=ctx.recipe.description,
        out_dir=str(ctx.out),
        model=ctx.recipe.model or ctx.model,
        settings=ctx.recipe.to_dict(),
        stages=results,
        accuracy=accuracy,
        sizes=sizes,
        gate=gate,
        seconds=seconds,
        files={"summary_json": str(ctx.out / SUMMARY_JSON), "summary_md": str(ctx.out / SUMMARY_MD)},
        error=None if error is None else (str(error) or type(error).__name__),
    )


def write_summary(summary: RunSummary, out: Path) -> None:
    write_json(out / SUMMARY_JSON, summary.to_dict())
    tmp = out / f".{SUMMARY_MD}.tmp"
    tmp.write_text(summary_markdown(summary), encoding="utf-8")
    tmp.replace(out / SUMMARY_MD)


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def summary_markdown(summary: RunSummary) -> str:
    """Tables fit for a pull-request comment: verdict, accuracy per category, sizes, stage times."""
    title = summary.description or Path(summary.recipe).stem
    lines = [
        f"## vlq run: {title}",
        "",
        f"model `{summary.model}`, recipe `{summary.recipe}`, vlq {summary.vlq_version}",
        "",
    ]
    if summary.gate is not None:
        verdict = "passed" if summary.gate.passed else "FAILED"
        lines += [f"**Accuracy gate {verdict}**: {summary.gate.message}.", ""]
        if summary.gate.agreement is not None:
            kl = (
                f", mean KL(16-bit || quantized) {summary.gate.mean_kl:.4f}"
                if summary.gate.mean_kl is not None
                else ""
            )
            lines += [
                f"The quantized model gives the same answer on {100 * summary.gate.agreement:.1f}% of the rows{kl}.",
                "",
            ]
    if summary.error is not None:
        lines += [f"**Run stopped**: {summary.error}", ""]
    base, quant = summary.accuracy.get("baseline") or {}, summary.accuracy.get("quantized") or {}
    if base or quant:
        q = summary.settings["quantize"]
        e = summary.settings["eval"]
        lines += [
            f"### MMBench accuracy (circular, %, mode {e['mode']})",
            "",
            f"| | 16-bit | w{q['w_bits']}a16 g{q['w_group_size']} kv{e['kv_bits']} | change (points) |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name in list(dict.fromkeys([*base, *quant])):
            b, a = base.get(name), quant.get(name)
            delta = f"{100 * (a - b):+.1f}" if a is not None and b is not None else "-"
            label = f"**{name}**" if name == "Overall" else name
            lines.append(f"| {label} | {_pct(b)} | {_pct(a)} | {delta} |")
        lines.append("")
    lines += [
        "### Sizes",
        "",
        "| artifact | size |",
        "| --- | ---: |",
        f"| 16-bit checkpoint (weights) | {_size(summary.sizes.get('model_16bit'))} |",
        f"| quantized checkpoint (weights) | {_size(summary.sizes.get('quantized'))} |",
        f"| exported ViT | {_size(summary.sizes.get('vit'))} |",
        "",
        "### Stages",
        "",
        "| stage | status | time | note |",
        "| --- | --- | ---: | --- |",
    ]
    for stage in summary.stages:
        time_cell = _duration(stage.seconds) if stage.status == RAN else "-"
        lines.append(f"| {stage.name} | {stage.status} | {time_cell} | {stage.note.replace('|', '/')} |")
    lines += ["", f"Total {_duration(summary.seconds)}.", ""]
    return "\n".join(lines)


# --- the built-in demo as a recipe ------------------------------------------------------------------


def demo_recipe(work_dir: str | Path = "vlq-demo", device: str = "auto") -> Recipe:
    """`recipes/demo.yaml` as data (a test keeps the two equal): the tiny LLaVA, end to end.

    It lives in code too because an installed vlq has no `recipes/` folder, and `vlq demo` must
    work from any directory.
    """
    from vlq.recipe import EvalSection, ExportSection, QuantizeSection

    return Recipe(
        model=REFERENCE,
        out=str(work_dir),
        description="vlq demo (the shipped reference VLM)",
        stages=STAGES,
        quantize=QuantizeSection(
            calib_dataset="ptb",
            calib_samples=32,
            calib_seqlen=256,
            w_bits=4,
            w_group_size=128,
            search_scale=True,
            search_clip=True,
            device=device,
            seed=0,
        ),
        export=ExportSection(out="vit", dtype="fp32", max_batch=2, device=device),
        eval=EvalSection(
            data=REFERENCE, mode="logits", kv_bits=16, batch_size=16, device=device, max_drop=5.0
        ),
        source="recipes/demo.yaml (built in)",
    )


def run_demo_recipe(
    work_dir: str | Path = "vlq-demo",
    force: bool = False,
    device: str = "auto",
    on_stage: Callable[[str, str], None] = lambda stage, action: None,
    on_start: Callable[[int], None] = lambda n: None,
    on_layer: Callable = lambda report: None,
    on_progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
) -> RunSummary:
    """`vlq demo` as a recipe run: tiny LLaVA -> quantize -> export-vit -> eval both -> gate -> summary.

    A second call on the same `work_dir` reuses every stage; `force` re-runs them all.
    """
    return run_recipe(
        demo_recipe(work_dir, device),
        force=force,
        on_stage=on_stage,
        on_start=on_start,
        on_layer=on_layer,
        on_progress=on_progress,
    )
