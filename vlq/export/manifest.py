"""The export folder's layout and its manifest.json: what a runtime needs to use the encoder correctly."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from vlq.errors import InputError

MANIFEST = "manifest.json"
ONNX_FILE = "vit.onnx"
ENGINE_FILE = "vit.engine"
TIMING_CACHE = "timing.cache"
FORMAT = "vlq-vit/1"

_PACKAGES = ("vlq", "torch", "transformers", "onnx", "onnxruntime", "onnxscript", "onnxslim", "tensorrt")


def versions() -> dict[str, str | None]:
    """Installed versions of everything that shaped the export (None: not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    if found["vlq"] is None:
        import vlq

        found["vlq"] = vlq.__version__
    return found


def read_manifest(folder: str | Path) -> dict:
    """The manifest of an export folder, or an error saying the folder is not one."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{folder} has no {MANIFEST}: not a folder written by vlq export-vit") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is unreadable: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: format {manifest.get('format')!r}, this vlq reads {FORMAT}")
    return manifest
