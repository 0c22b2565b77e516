"""Find the family of a checkpoint: by architecture name, by model_type, then structurally."""

from __future__ import annotations

from torch import nn

from vlq.errors import InputError
from vlq.models import bagel, internlm2, llama_like, qwen_vl
from vlq.models.base import Family
from vlq.models.llama_like import LLAMA_SCALE_GROUPS

FAMILIES: tuple[Family, ...] = (*llama_like.FAMILIES, *internlm2.FAMILIES, *qwen_vl.FAMILIES, *bagel.FAMILIES)

_LLAMA_LAYER_PARTS = (
    "input_layernorm",
    "post_attention_layernorm",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _llm_architectures(config) -> tuple[str, ...]:
    llm = getattr(config, "llm_config", None) or getattr(config, "text_config", None)
    if isinstance(llm, dict):
        return tuple(llm.get("architectures") or ())
    return tuple(getattr(llm, "architectures", None) or ())


def _llm_matches(family: Family, config) -> bool:
    return not family.llm_architectures or any(a in family.llm_architectures for a in _llm_architectures(config))


def family_for_config(config) -> Family | None:
    """The registered family that names this config's architecture or model_type, if any."""
    architectures = tuple(getattr(config, "architectures", None) or ())
    model_type = getattr(config, "model_type", None)
    for matches in (
        lambda f: any(arch in f.architectures for arch in architectures),
        lambda f: model_type in f.model_types,
    ):
        for family in FAMILIES:
            if matches(family) and _llm_matches(family, config):
                return family
    return None


def _is_llama_like_layer(layer: nn.Module) -> bool:
    names = {name for name, _ in layer.named_modules()}
    return all(part in names for part in _LLAMA_LAYER_PARTS)


def find_generic_family(model: nn.Module) -> Family | None:
    """A Llama-like decoder found by structure: the longest ModuleList of q/k/v/o + gate/up/down layers."""
    best: tuple[int, str] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and _is_llama_like_layer(module[0]):
            if best is None or len(module) > best[0]:
                best = (len(module), name)
    if best is None:
        return None
    return Family(
        name="generic",
        architectures=(),
        layers=best[1],
        scale_groups=LLAMA_SCALE_GROUPS,
        keep_16bit=("lm_head",),
        auto_class="AutoModelForCausalLM",
        notes=f"found structurally: decoder layers at {best[1]}",
    )


def supported_families_message() -> str:
    names = ", ".join(f.name for f in FAMILIES)
    return (
        f"supported families: {names}, and any Llama-like decoder (found structurally); "
        "to add one, write a small Family in vlq/models/ (see vlq/models/llama_like.py)"
    )


def detect_family(model: nn.Module) -> Family:
    """The family of a loaded model, or an error that lists what is supported."""
    family = family_for_config(model.config) or find_generic_family(model)
    if family is None:
        arch = ",".join(getattr(model.config, "architectures", None) or [type(model).__name__])
        raise InputError(f"unsupported architecture {arch}: {supported_families_message()}")
    return family
