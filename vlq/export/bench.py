"""`vlq bench vit`: vision-encoder latency and throughput per backend and batch size, side by side.

Every backend sees the same preprocessed inputs (preprocessing is not timed): torch runs the
VLM's own image-features method, onnxruntime the exported ONNX, tensorrt the engine. A backend
that cannot run here gets a row saying why instead of a number.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vlq.errors import InputError, UsageError
from vlq.export.exporter import DTYPES, ExportOptions, export_vit
from vlq.export.manifest import ENGINE_FILE, ONNX_FILE, read_manifest
from vlq.export.paths import Case, Inputs, Runner, VisionPath, vision_path
from vlq.export.profile import Profile
from vlq.export.runtime import BACKENDS, OrtEncoder, check_belongs
from vlq.loading import load_vlm


@dataclass
class BenchRow:
    backend: str
    batch: int
    median_ms: float | None = None
    p90_ms: float | None = None
    images_per_s: float | None = None
    status: str = "ok"


@dataclass
class BenchResult:
    model: str
    kind: str
    device: str
    dtype: str
    image_size: str
    export_dir: str
    rows: list[BenchRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_batch_sizes(text: str) -> list[int]:
    """`1,4,8` -> [1, 4, 8]."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--batch-sizes {text!r}: expected comma-separated integers, e.g. 1,4,8") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batch-sizes {text!r}: expected positive integers")
    return sizes


def time_runner(run: Runner, inputs: Inputs, warmup: int, iters: int, cuda: bool) -> list[float]:
    """Wall-clock milliseconds of `iters` calls after `warmup` calls (synchronized on CUDA)."""
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            start = time.perf_counter()
            run(inputs)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return times


def _row(backend: str, batch: int, times: list[float]) -> BenchRow:
    median = statistics.median(times)
    p90 = sorted(times)[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return BenchRow(backend, batch, median, p90, batch / median * 1000)


def _inputs(path: VisionPath, batch: int, side: int | None) -> Inputs:
    sizes = [(side, side)] * batch if side else [(240 + 16 * i, 320) for i in range(batch)]
    return path.preprocess(Case.synthetic(sizes, seed=batch).images)


def _runners(path: VisionPath, folder: Path, backends: Sequence[str]) -> dict[str, Runner | str]:
    """Each backend's runner, or the reason it cannot run here."""
    runners: dict[str, Runner | str] = {}
    for backend in backends:
        if backend == "torch":
            runners[backend] = path.reference
        elif backend == "onnxruntime":
            runners[backend] = OrtEncoder(folder / ONNX_FILE, path.device)
        else:
            runners[backend] = _trt_runner(folder, path.device)
    return runners


def _trt_runner(folder: Path, device: torch.device) -> Runner | str:
    try:
        import tensorrt
    except ImportError:
        return "skipped: tensorrt not installed (pip install 'vlq[trt]')"
    if device.type != "cuda":
        return "skipped: TensorRT needs the model on a CUDA GPU (--device cuda)"
    if not (folder / ENGINE_FILE).is_file():
        return f"skipped: no {ENGINE_FILE} in {folder} (export with --trt)"
    from vlq.export.trt import TrtEncoder

    return TrtEncoder(folder / ENGINE_FILE, Profile.from_dict(read_manifest(folder)["profile"]), tensorrt)


def bench_vit(
    model: str,
    vit_dir: str | None = None,
    backends: Sequence[str] = BACKENDS,
    batch_sizes: Sequence[int] = (1, 4, 8),
    image_size: int | None = None,
    warmup: int = 2,
    iters: int = 10,
    device: str = "auto",
    dtype: str = "fp32",
    on_stage: Callable[[str], None] = lambda stage: None,
) -> BenchResult:
    """Time every backend at every batch size; export to a temp folder first when `vit_dir` is not given."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise UsageError(f"--backends {','.join(backends)}: choose from {', '.join(BACKENDS)}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise UsageError(f"--batch-sizes {list(batch_sizes)}: positive integers")
    if warmup < 0 or iters < 1:
        raise UsageError("--warmup must be >= 0 and --iters >= 1")
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype}: use fp32 or fp16")
    on_stage(f"loading {model}")
    loaded = load_vlm(model, device, DTYPES[dtype])
    path = vision_path(loaded)
    side = image_size or (448 if path.kind == "qwen2_vl" else None)
    with tempfile.TemporaryDirectory(prefix="vlq-bench-vit-") as tmp:
        folder = Path(vit_dir) if vit_dir else Path(tmp) / "vit"
        if vit_dir:
            check_belongs(path, read_manifest(folder), folder)
        elif set(backends) - {"torch"}:
            on_stage("exporting the encoder to a temporary folder (pass --vit-dir to reuse an export)")
            sizes = f"{side},{side},{side}" if path.kind == "qwen2_vl" else None
            export_vit(
                ExportOptions(
                    model=model, out=str(folder), dtype=dtype, max_batch=max(batch_sizes), image_sizes=sizes
                ),
                on_stage,
                loaded=loaded,
            )
        runners = _runners(path, folder, backends)
        result = BenchResult(
            model,
            path.kind,
            path.device.type,
            dtype,
            f"{side}x{side}" if side else "processor crop",
            str(vit_dir) if vit_dir else "temporary export",
        )
        for batch in batch_sizes:
            inputs = _inputs(path, batch, side)
            for backend, run in runners.items():
                if isinstance(run, str):
                    result.rows.append(BenchRow(backend, batch, status=run))
                    continue
                on_stage(f"timing {backend} at batch {batch}")
                try:
                    times = time_runner(run, inputs, warmup, iters, path.device.type == "cuda")
                except (
                    InputError,
                    RuntimeError,
                ) as exc:  # a batch outside the TensorRT profile, out of memory
                    result.rows.append(BenchRow(backend, batch, status=f"failed: {exc}"))
                    continue
                result.rows.append(_row(backend, batch, times))
    return result


def vit_table(result: BenchResult, name: str = ""):
    """The side-by-side rich table of one `bench_vit` run (CLI and benchmark script)."""
    from rich.markup import escape
    from rich.table import Table

    label = f"{name} " if name else ""
    table = Table(
        title=f"vision encoder {label}({result.kind}, {result.device}, {result.dtype}, images {result.image_size})"
    )
    for column in ("backend", "batch", "median ms", "p90 ms", "images/s", "status"):
        table.add_column(column, justify="left" if column in ("backend", "status") else "right")
    for r in result.rows:
        ok = r.median_ms is not None
        table.add_row(
            r.backend,
            str(r.batch),
            f"{r.median_ms:.2f}" if ok else "-",
            f"{r.p90_ms:.2f}" if ok else "-",
            f"{r.images_per_s:.1f}" if ok else "-",
            escape(r.status),
        )
    return table
