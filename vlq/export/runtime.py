"""Run a VLM with an exported vision encoder: onnxruntime or TensorRT for the pixels, PyTorch for the LLM.

`use_exported_vit(loaded, folder, backend)` replaces the model's image-features method (the one
its family's `VisionSpec.features` names) on that model instance; `vlq generate`, `vlq eval` and
plain `model.generate` calls then get their image embeddings from the exported encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vlq.errors import InputError, UsageError, require_packages
from vlq.export.manifest import ENGINE_FILE, ONNX_FILE, read_manifest
from vlq.export.paths import Runner, VisionPath, VitPatch, same_weights, vision_path
from vlq.export.profile import Profile
from vlq.loading import LoadedVlm

BACKENDS = ("torch", "onnxruntime", "tensorrt")
#: What exporting (torch.onnx's dynamo exporter, checker, parity) imports: the `export` extra.
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def ort_providers(device: torch.device | str) -> list[str]:
    """CUDA first when the model is on a GPU and this onnxruntime build has it; CPU always."""
    import onnxruntime

    cuda = (
        torch.device(device).type == "cuda"
        and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


class OrtEncoder:
    """An ONNX encoder in an onnxruntime session, called with torch tensors, answering a torch tensor."""

    def __init__(self, onnx_path: Path, device: torch.device | str = "cpu") -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(onnx_path), providers=ort_providers(device))
        self.types = {i.name: _ORT_TYPES[i.type] for i in self.session.get_inputs()}

    def __call__(self, inputs: dict[str, Tensor]) -> Tensor:
        device = next(iter(inputs.values())).device
        feeds = {
            name: inputs[name].detach().cpu().numpy().astype(kind, copy=False)
            for name, kind in self.types.items()
        }
        return torch.from_numpy(self.session.run(None, feeds)[0]).to(device)


def check_vit_options(backend: str, folder: str | Path | None) -> None:
    """Fail on a wrong backend name or a missing export folder before any model is loaded."""
    if backend not in BACKENDS:
        raise UsageError(f"--vit-backend {backend}: use one of {', '.join(BACKENDS)}")
    if backend != "torch":
        if folder is None:
            raise UsageError(f"--vit-backend {backend} needs --vit-dir: a folder written by vlq export-vit")
        read_manifest(folder)


def open_runner(folder: str | Path, backend: str, device: torch.device | str) -> tuple[Runner, dict]:
    """The encoder of an export folder on `backend` ("onnxruntime" or "tensorrt"), and the folder's manifest."""
    check_vit_options(backend, folder)
    if backend == "torch":
        raise UsageError(
            "the torch backend runs the model's own vision path: there is no exported encoder to open"
        )
    folder = Path(folder)
    manifest = read_manifest(folder)
    if backend == "onnxruntime":
        require_packages(("onnxruntime",), "export", "--vit-backend onnxruntime")
        return OrtEncoder(folder / ONNX_FILE, device), manifest
    from vlq.export.trt import TrtEncoder, import_tensorrt

    trt = import_tensorrt()
    if not (folder / ENGINE_FILE).is_file():
        raise InputError(f"{folder} has no {ENGINE_FILE}: export with --trt to build the TensorRT engine")
    if not torch.cuda.is_available():
        raise InputError("--vit-backend tensorrt needs a CUDA GPU")
    return TrtEncoder(folder / ENGINE_FILE, Profile.from_dict(manifest["profile"]), trt), manifest


def check_belongs(path: VisionPath, manifest: dict, folder: Path) -> None:
    """Refuse an export of another family or of other vision weights than the loaded model's."""
    if manifest.get("kind") != path.kind:
        raise InputError(
            f"{folder} holds a {manifest.get('kind')} encoder; this model's vision path is {path.kind}"
        )
    if not same_weights(manifest["fingerprint"], path.fingerprint()):
        raise InputError(f"{folder} was exported from other vision weights than {path.loaded.folder}'s")


def use_exported_vit(loaded: LoadedVlm, folder: str | Path | None, backend: str = "onnxruntime") -> VitPatch:
    """Make `loaded.model` take its image embeddings from the encoder exported to `folder`.

    `backend="torch"` changes nothing. Returns a handle whose `restore()` undoes the change.
    """
    check_vit_options(backend, folder)
    if backend == "torch":
        return VitPatch()
    path = vision_path(loaded)
    runner, manifest = open_runner(folder, backend, path.device)
    check_belongs(path, manifest, Path(folder))
    return path.install(runner, int(manifest["profile"]["max_batch"]), backend)
