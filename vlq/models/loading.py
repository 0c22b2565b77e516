"""Resolve a MODEL argument (local folder or hub id) and load the 16-bit checkpoint on the CPU."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vlq.errors import InputError, UsageError
from vlq.models.base import Family
from vlq.models.registry import detect_family, family_for_config

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    """`auto` is the GPU when there is one, else the CPU; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: use auto, cpu, cuda or cuda:N") from None


def resolve_model_dir(model: str) -> Path:
    """A local checkpoint folder for `model`: the folder itself, or a hub snapshot when online."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{model} is a file; MODEL must be a checkpoint folder (with config.json) or a hub id")
        if not (path / "config.json").is_file():
            raise InputError(f"{model} has no config.json: not a transformers model folder")
        return path
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise InputError(f"model folder {model} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model))
    except Exception as exc:
        raise InputError(
            f"{model} is not a local folder and could not be fetched from the hub ({type(exc).__name__}); "
            "pass a local checkpoint folder"
        ) from None


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{folder}/config.json is unreadable: {exc}") from None


def torch_dtype(name: str, config: dict) -> torch.dtype:
    """`auto` means the checkpoint's own dtype (float16 when it doesn't say)."""
    if name == "auto":
        text_config = config.get("text_config") or config.get("llm_config") or {}
        name = config.get("torch_dtype") or config.get("dtype") or text_config.get("torch_dtype") or "float16"
    if name not in DTYPES:
        raise UsageError(f"--dtype {name}: use auto, float16 or bfloat16")
    return DTYPES[name]


@dataclass
class SourceModel:
    model: nn.Module
    folder: Path
    family: Family
    dtype: torch.dtype


def _auto_class(family: Family | None, config: dict):
    import transformers

    if family is not None:
        return getattr(transformers, family.auto_class)
    if config.get("vision_config") is not None:
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


def load_source_model(model: str, dtype: str = "auto") -> SourceModel:
    """Load a 16-bit checkpoint on the CPU and find its family (nothing is moved to a GPU here)."""
    from transformers import AutoConfig

    folder = resolve_model_dir(model)
    raw = read_config(folder)
    if raw.get("quantization_config"):
        raise InputError(f"{folder} is already quantized ({raw['quantization_config'].get('quant_method')})")
    trust = "auto_map" in raw
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
    except Exception as exc:
        raise InputError(f"{folder}: cannot read the model config ({type(exc).__name__}: {exc})") from None
    family = family_for_config(config)
    loader = _auto_class(family, raw)
    dtype_ = torch_dtype(dtype, raw)
    try:
        loaded = loader.from_pretrained(folder, dtype=dtype_, trust_remote_code=trust, device_map="cpu")
    except Exception as exc:
        raise InputError(f"{folder}: cannot load the model ({type(exc).__name__}: {exc})") from None
    loaded.eval()
    return SourceModel(loaded, folder, family or detect_family(loaded), dtype_)
