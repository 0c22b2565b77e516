"""Load 16-bit and AutoAWQ-format 4-bit checkpoints for inference, with vlq's own int4 runner.

A quantized folder goes through transformers' own `from_pretrained` (so checkpoint key
renaming, sharding and remote code work as for any model), with vlq's quantizer standing in for
transformers' AWQ one, which needs GPU-only packages: every linear not listed in
`modules_to_not_convert` becomes an `AwqLinear` before the weights load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vlq.awq.config import AwqQuantizationConfig
from vlq.errors import InputError
from vlq.kernels.branched import to_int4
from vlq.models.base import Family
from vlq.models.loading import _auto_class, read_config, resolve_device, resolve_model_dir, torch_dtype
from vlq.models.registry import detect_family, family_for_config


def replace_with_awq_linears(model: nn.Module, qconfig: AwqQuantizationConfig, dtype: torch.dtype) -> int:
    """Swap every nn.Linear outside `modules_to_not_convert` for an empty int4 module (meta device).

    Children of a replaced linear (PLoRA's branches) are never replaced: they stay 16 bit.
    """
    converted: list[str] = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or any(skip in name for skip in qconfig.modules_to_not_convert):
            continue
        if any(name.startswith(parent + ".") for parent in converted):
            continue
        converted.append(name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, to_int4(module, qconfig.group_size, dtype))
    return len(converted)


def _vlq_quantizer_class():
    from transformers.quantizers.base import HfQuantizer

    class VlqAwqQuantizer(HfQuantizer):
        """Loads AutoAWQ GEMM checkpoints into `AwqLinear` modules (CPU and GPU)."""

        requires_calibration = True

        def validate_environment(self, *args, **kwargs) -> None:
            pass

        def update_dtype(self, dtype):
            return dtype

        def _process_model_before_weight_loading(self, model, **kwargs):
            qconfig = AwqQuantizationConfig.from_dict(self.quantization_config.to_dict())
            replace_with_awq_linears(model, qconfig, torch.float16)

        def _process_model_after_weight_loading(self, model, **kwargs):
            return model

        def is_serializable(self):
            return True

        @property
        def is_trainable(self):
            return False

    return VlqAwqQuantizer


@contextlib.contextmanager
def _vlq_awq_loader() -> Iterator[None]:
    """Route `quant_method: awq` to vlq's quantizer for the duration of one `from_pretrained`."""
    from transformers.quantizers import auto

    saved = auto.AUTO_QUANTIZER_MAPPING["awq"]
    auto.AUTO_QUANTIZER_MAPPING["awq"] = _vlq_quantizer_class()
    try:
        yield
    finally:
        auto.AUTO_QUANTIZER_MAPPING["awq"] = saved


@dataclass
class LoadedVlm:
    model: nn.Module
    processor: object | None
    tokenizer: object
    family: Family
    quantized: bool
    folder: Path


def load_vlm(path: str | Path, device: str = "auto", dtype: str = "auto") -> LoadedVlm:
    """A 16-bit or AutoAWQ 4-bit checkpoint, ready for generation on `device`; dtype `auto` is the
    checkpoint's, except float32 in place of float16 on the CPU."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    folder = resolve_model_dir(str(path))
    raw = read_config(folder)
    qconfig = raw.get("quantization_config")
    if qconfig and qconfig.get("quant_method") != "awq":
        raise InputError(f"{folder}: quantization {qconfig.get('quant_method')!r} is not supported; vlq runs AWQ")
    if qconfig and (qconfig.get("bits") != 4 or str(qconfig.get("version", qconfig.get("format"))).lower() != "gemm"):
        raise InputError(f"{folder}: vlq runs AWQ 4-bit GEMM checkpoints, this one is {qconfig}")
    trust = "auto_map" in raw
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
    family = family_for_config(config)
    loader = _auto_class(family, raw)
    target = resolve_device(device)
    dtype_ = torch_dtype(dtype, raw)
    if dtype == "auto" and target.type == "cpu" and dtype_ == torch.float16:
        # CPUs without native fp16 matrix units run fp16 matmuls far slower than fp32 (a
        # 200x256x1024 product: 100 ms against 1.2 ms on an AVX-512 EPYC), which made CPU evaluation
        # of a float16 checkpoint crawl; float32 holds every float16 weight exactly.
        dtype_ = torch.float32
    try:
        with _vlq_awq_loader() if qconfig else contextlib.nullcontext():
            model = loader.from_pretrained(folder, dtype=dtype_, trust_remote_code=trust, device_map=str(target))
    except Exception as exc:
        raise InputError(f"{folder}: cannot load the model ({type(exc).__name__}: {exc})") from None
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
    try:
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=trust)
    except Exception:  # text-only checkpoints have no processor
        processor = None
    return LoadedVlm(model, processor, tokenizer, family or detect_family(model), bool(qconfig), folder)


def load_quantized(path: str | Path, device: str = "auto") -> nn.Module:
    """The transformers model of a quantized folder, linears replaced by `AwqLinear`."""
    loaded = load_vlm(path, device)
    if not loaded.quantized:
        raise InputError(f"{loaded.folder} is not quantized (no quantization_config in config.json)")
    return loaded.model
