"""`vlq export-vit`: the VLM's pixels -> LLM-embeddings path as ONNX (and a TensorRT engine), checked.

Order of work: resolve the family's vision path and the shape profile (all user mistakes fail
here, before anything is written), export with `torch.onnx.export(dynamo=True)` into a temp
folder, check and simplify the graph, compare onnxruntime with the VLM's own PyTorch features on
real preprocessed images, write manifest.json, move the folder into place. The TensorRT engine is
built afterwards into the finished folder, so a missing TensorRT leaves a usable ONNX export.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlq.errors import GateFailed, InputError, UsageError, require_packages
from vlq.export.manifest import (
    ENGINE_FILE,
    FORMAT,
    MANIFEST,
    ONNX_FILE,
    TIMING_CACHE,
    read_manifest,
    versions,
)
from vlq.export.parity import DEFAULT_TOLERANCE, ParityFigure, compare, gate, load_images
from vlq.export.paths import Case, Inputs, Runner, VisionPath, vision_path
from vlq.export.profile import Profile, check_batches, parse_image_sizes
from vlq.export.runtime import EXPORT_PACKAGES, OrtEncoder
from vlq.loading import LoadedVlm, load_vlm
from vlq.output import atomic_dir, write_json

DTYPES = {"fp32": "float32", "fp16": "float16"}
#: Protobuf's hard limit: bigger models keep their weights in vit.onnx.data beside the graph.
EXTERNAL_DATA_BYTES = 2 * 1024**3


@dataclass
class ExportOptions:
    model: str
    out: str
    dtype: str = "fp32"
    opset: int = 17
    max_batch: int = 8
    opt_batch: int = 1
    image_sizes: str | None = None
    trt: bool = False
    workspace_gb: float = 4.0
    timing_cache: str | None = None
    device: str = "auto"
    tolerance: float | None = None
    simplify: bool = True
    images: Sequence[str] = ()
    force: bool = False
    #: Weight bytes above which the weights go to external data (tests lower it).
    external_data_bytes: int = EXTERNAL_DATA_BYTES


@dataclass
class ExportResult:
    out: Path
    manifest: dict
    parity: list[ParityFigure]
    trt_parity: list[ParityFigure] = field(default_factory=list)
    seconds: float = 0.0


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"--out {out} is not empty; pass --force to overwrite it")


def _validate(options: ExportOptions) -> tuple[tuple[int, int, int] | None, float]:
    if options.dtype not in DTYPES:
        raise UsageError(f"--dtype {options.dtype}: use fp32 or fp16")
    if not 14 <= options.opset <= 21:
        raise UsageError(
            f"--opset {options.opset}: use 14..21 (17 is the default; TensorRT 8.6+ reads up to 17-20)"
        )
    if options.workspace_gb <= 0:
        raise UsageError(f"--workspace-gb {options.workspace_gb}: must be positive")
    check_batches(options.max_batch, options.opt_batch)
    tolerance = DEFAULT_TOLERANCE[options.dtype] if options.tolerance is None else options.tolerance
    if tolerance <= 0:
        raise UsageError(f"--tolerance {tolerance}: must be positive")
    return parse_image_sizes(options.image_sizes), tolerance


def export_onnx(path: VisionPath, sample: Inputs, onnx_path: Path, opset: int, external_bytes: int) -> dict:
    """torch.onnx.export (dynamo) of the path's encoder with dynamic axes; weights external above `external_bytes`."""
    encoder = path.encoder()
    weight_bytes = sum(p.numel() * p.element_size() for p in path.vision_parameters())
    with warnings.catch_warnings(), torch.no_grad(), _quiet_loggers("torch.onnx", "onnxscript", "onnx_ir"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            encoder,
            tuple(sample[name] for name in path.input_names),
            dynamo=True,
            input_names=list(path.input_names),
            output_names=[path.output_name],
            dynamic_shapes=tuple(path.dynamic_shapes()[name] for name in path.input_names),
            opset_version=opset,
            verbose=False,
        )
    external = weight_bytes > external_bytes
    program.save(str(onnx_path), external_data=external)
    return {
        "weight_bytes": weight_bytes,
        "external_data": external,
        "split_fixes": downgrade_split(onnx_path),
    }


def downgrade_split(onnx_path: Path) -> int:
    """Drop Split's `num_outputs` from graphs below opset 18; returns how many nodes changed.

    The dynamo exporter writes opset 18 and converts down; the converter keeps `num_outputs`
    (new in opset 18), which opset 17 rejects. Below 18, a Split without sizes splits evenly into
    its number of outputs: the same operation.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    if _opset(model) >= 18:
        return 0
    fixed = 0
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            kept = [a for a in node.attribute if not (node.op_type == "Split" and a.name == "num_outputs")]
            if len(kept) != len(node.attribute):
                del node.attribute[:]
                node.attribute.extend(kept)
                fixed += 1
    if fixed:
        onnx.save(model, str(onnx_path))
    return fixed


def _opset(model) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_and_simplify(onnx_path: Path, external: bool, simplify: bool) -> dict:
    """onnx.checker on the file; onnxslim (if installed) when it makes the graph smaller and the model is inline."""
    import onnx

    onnx.checker.check_model(str(onnx_path), full_check=not external)
    model = onnx.load(str(onnx_path), load_external_data=False)
    nodes = len(model.graph.node)
    report = {"checker": "passed", "nodes": nodes, "opset": _opset(model)}
    if not simplify:
        return report | {"simplified": "off (--no-simplify)"}
    if external:
        return report | {"simplified": "skipped: weights are external data (over 2 GB)"}
    try:
        import onnxslim
    except ImportError:
        return report | {"simplified": "skipped: onnxslim not installed (pip install onnxslim)"}
    slim = onnxslim.slim(onnx.load(str(onnx_path)))
    if slim is None or len(slim.graph.node) >= nodes:
        return report | {"simplified": "onnxslim: no smaller graph"}
    onnx.checker.check_model(slim, full_check=True)
    onnx.save(slim, str(onnx_path))
    return report | {
        "nodes": len(slim.graph.node),
        "simplified": f"onnxslim {onnxslim.__version__}: {nodes} -> {len(slim.graph.node)} nodes",
    }


def graph_io(onnx_path: Path) -> dict:
    """Input and output names, element types and (symbolic) shapes, as the ONNX graph declares them."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def describe(values) -> list[dict]:
        return [
            {
                "name": v.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def run_parity(
    path: VisionPath, run: Runner, cases: list[tuple[Case, Inputs]], reference: Runner
) -> list[ParityFigure]:
    """Figures of `run` against `reference` on every case (both return the encoder's output)."""
    figures = []
    for case, inputs in cases:
        out = run(inputs).detach().float().cpu().numpy()
        ref = reference(inputs).detach().float().cpu().numpy()
        shapes = {name: list(value.shape) for name, value in inputs.items()}
        figures.append(compare(case.label, path.images_in(inputs), shapes, out, ref))
    return figures


def _dtype_name(dtype: torch.dtype) -> str:
    names = {torch.float32: "fp32", torch.float16: "fp16"}
    if dtype not in names:
        raise UsageError(f"the model is loaded in {dtype}; export-vit writes fp32 or fp16 graphs")
    return names[dtype]


def export_vit(
    options: ExportOptions,
    on_stage: Callable[[str], None] = lambda stage: None,
    loaded: LoadedVlm | None = None,
) -> ExportResult:
    """Export, check and (optionally) build the TensorRT engine; see the module docstring for the order.

    `loaded`: an already loaded model to export (then `options.model`, `dtype` and `device` are not read).
    """
    start = time.perf_counter()
    require_packages(EXPORT_PACKAGES, "export", "vlq export-vit")
    image_sizes, tolerance = _validate(options)
    out = Path(options.out)
    check_out_dir(out, options.force)
    extra_images = load_images(options.images)

    if loaded is None:
        on_stage(f"loading {options.model}")
        loaded = load_vlm(options.model, options.device, DTYPES[options.dtype])
    path = vision_path(loaded)
    profile = path.profile(options.max_batch, options.opt_batch, image_sizes)
    cases = path.parity_cases(profile)
    if extra_images:
        cases += [
            Case(f"{len(chunk)} user image(s)", chunk) for chunk in _chunks(extra_images, options.max_batch)
        ]
    prepared = [(case, path.preprocess(case.images)) for case in cases]

    with atomic_dir(out) as tmp:
        on_stage(f"exporting the {path.kind} vision path to ONNX (opset {options.opset}, {options.dtype})")
        onnx_path = tmp / ONNX_FILE
        saved = export_onnx(
            path,
            path.preprocess(path.trace_images(profile)),
            onnx_path,
            options.opset,
            options.external_data_bytes,
        )
        graph = check_and_simplify(onnx_path, saved["external_data"], options.simplify)
        on_stage(f"parity: onnxruntime vs PyTorch on {len(prepared)} cases")
        parity = run_parity(path, OrtEncoder(onnx_path, path.device), prepared, path.reference)
        gate(parity, tolerance, "onnxruntime vs PyTorch", "nothing was written")
        manifest = {
            "format": FORMAT,
            "model": str(loaded.folder),
            "family": loaded.family.name,
            "architecture": type(loaded.model).__name__,
            "kind": path.kind,
            "vision": {
                "tower": path.spec.tower,
                "projector": path.spec.projector,
                "features": path.spec.features,
            },
            "dtype": _dtype_name(path.dtype),
            "files": sorted(p.name for p in tmp.iterdir()),
            "exporter": f"torch.onnx.export(dynamo=True), opset {graph['opset']}",
            "graph": graph | saved,
            "io": graph_io(onnx_path),
            "dynamic": _dynamic_note(path),
            "profile": profile.to_dict(),
            "preprocessing": path.preprocessing(),
            "parity": {
                "tolerance_max_rel": tolerance,
                "reference": f"{path.spec.features} (PyTorch, {path.dtype}, {path.device.type})",
                "onnxruntime": [f.to_dict() for f in parity],
            },
            "tensorrt": None,
            "fingerprint": path.fingerprint(),
            "versions": versions(),
        }
        write_json(tmp / MANIFEST, manifest)
    result = ExportResult(out, manifest, parity)
    if options.trt:
        on_stage("building the TensorRT engine")
        result.trt_parity = build_trt(out, prepared, options, path, tolerance)
        result.manifest = read_manifest(out)
    result.seconds = time.perf_counter() - start
    return result


def build_trt(
    out: Path,
    prepared: list[tuple[Case, Inputs]],
    options: ExportOptions,
    path: VisionPath,
    tolerance: float,
    trt=None,
) -> list[ParityFigure]:
    """Engine + timing cache into the finished export folder, checked against onnxruntime on the parity inputs."""
    from vlq.export.trt import TrtEncoder, build_engine, import_tensorrt

    try:
        trt = trt or import_tensorrt()
    except InputError as exc:
        raise InputError(
            f"{exc}; the ONNX export is complete in {out} (rerun with --trt --force to add the engine)"
        ) from None
    if not torch.cuda.is_available():
        raise InputError(f"TensorRT needs a CUDA GPU; the ONNX export is complete in {out}")
    manifest = read_manifest(out)
    profile = Profile.from_dict(manifest["profile"])
    cache = Path(options.timing_cache) if options.timing_cache else out / TIMING_CACHE
    build = build_engine(out / ONNX_FILE, out / ENGINE_FILE, profile, options.workspace_gb, cache, trt)
    engine, ort = TrtEncoder(out / ENGINE_FILE, profile, trt), OrtEncoder(out / ONNX_FILE, "cuda")
    figures = run_parity(path, engine, prepared, ort)
    trt_tolerance = max(tolerance, DEFAULT_TOLERANCE["fp16"])
    try:
        gate(
            figures,
            trt_tolerance,
            "TensorRT vs onnxruntime",
            f"the engine was deleted, the ONNX export in {out} stands",
        )
    except GateFailed:
        (out / ENGINE_FILE).unlink()
        raise
    manifest["tensorrt"] = build.to_dict() | {
        "parity": {
            "tolerance_max_rel": trt_tolerance,
            "reference": "onnxruntime",
            "cases": [f.to_dict() for f in figures],
        }
    }
    manifest["files"] = sorted(
        p.name for p in out.iterdir() if p.name != MANIFEST and not p.name.startswith(".")
    )
    manifest["versions"] = versions()
    write_json(out / MANIFEST, manifest)
    return figures


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The exporter logs its opset fallback and missing torchvision ops as warnings; vlq reports what matters."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _dynamic_note(path: VisionPath) -> str:
    names = ", ".join(f"{name} axis 0" for name in path.input_names)
    return f"dynamic: {names} (any value inside the profile for TensorRT; onnxruntime takes any)"


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]
