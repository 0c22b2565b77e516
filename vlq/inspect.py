"""`vlq inspect`: what auto-awq would do to a checkpoint, from its config alone (no weights loaded)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlq.errors import InputError
from vlq.models.base import get_module, resolve_groups
from vlq.models.loading import _auto_class, read_config, resolve_model_dir
from vlq.models.registry import detect_family, family_for_config


@dataclass
class GroupView:
    prev: str
    linears: list[str]
    inspect: str


@dataclass
class InspectReport:
    model: str
    family: str
    architecture: str
    layers_path: str
    num_layers: int
    scale_groups: list[GroupView]
    quantized_per_layer: list[str]
    modules_to_not_convert: list[str]
    params_total: int
    params_quantized: int
    bytes_16bit: int
    bytes_quantized: int
    group_size: int
    notes: list[str] = field(default_factory=list)


def quantized_bytes(params: int, group_size: int, bits: int = 4) -> float:
    """Packed codes plus one fp16 scale and one packed zero point per group."""
    return params * (bits + (16 + bits) / group_size) / 8


def build_skeleton(model: str) -> tuple[nn.Module, str]:
    """The model's modules on the meta device: structure and shapes without allocating weights."""
    from transformers import AutoConfig

    folder = resolve_model_dir(model)
    raw = read_config(folder)
    trust = "auto_map" in raw
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
        with torch.device("meta"):
            skeleton = _auto_class(family_for_config(config), raw).from_config(config, trust_remote_code=trust)
    except Exception as exc:
        raise InputError(f"{folder}: cannot build the model from its config ({type(exc).__name__}: {exc})") from None
    return skeleton, str(folder)


def inspect_model(model: str, group_size: int = 128) -> InspectReport:
    """Resolve the family and every layer's scale groups; count what gets quantized."""
    from vlq.awq.pipeline import modules_to_not_convert

    skeleton, folder = build_skeleton(model)
    family = detect_family(skeleton)
    layers = get_module(skeleton, family.layers)
    notes = [family.notes] if family.notes else []
    active = []
    for index, layer in enumerate(layers):
        active = resolve_groups(family, layer, index, group_size)
    skipped = [g.prev for g in family.scale_groups if g not in {r.group for r in active}]
    if skipped:
        notes.append(f"scale groups skipped (previous op cannot absorb a scale): {', '.join(skipped)}")
    names = family.quantized_linear_names(len(layers))
    params_quantized = sum(skeleton.get_submodule(n).weight.numel() for n in names)
    params_total = sum(p.numel() for p in skeleton.parameters())
    element = 2  # 16-bit checkpoints
    return InspectReport(
        model=folder,
        family=family.name,
        architecture=type(skeleton).__name__,
        layers_path=family.layers,
        num_layers=len(layers),
        scale_groups=[GroupView(r.group.prev, list(r.group.linears), r.group.inspect or r.group.linears[0]) for r in active],
        quantized_per_layer=list(family.quantized_linears()),
        modules_to_not_convert=modules_to_not_convert(skeleton, family, set(names)),
        params_total=params_total,
        params_quantized=params_quantized,
        bytes_16bit=params_total * element,
        bytes_quantized=int((params_total - params_quantized) * element + quantized_bytes(params_quantized, group_size)),
        group_size=group_size,
        notes=notes,
    )
