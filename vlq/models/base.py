"""What a model family is, as data: where the LLM decoder layers are, which linears share an input.

Every name in a `ScaleGroup` is relative to one decoder layer; every path in a `Family` is
relative to the loaded top-level model. `resolve_groups` turns the names into modules once,
before any GPU work, and fails naming the family and the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from vlq.errors import InputError


@dataclass(frozen=True)
class ScaleGroup:
    """Linears that read the output of `prev`, so one per-channel scale can be folded into `prev`.

    `inspect` names the module whose output error scores a candidate scale (AWQ's
    "module2inspect"); empty means the single linear itself. `kwargs` says whether that module
    takes the decoder layer's keyword arguments (attention mask, rotary embeddings...).
    `optional` groups are skipped when `prev` cannot absorb the scale (e.g. v_proj -> o_proj
    with grouped-query attention, where v_proj has fewer outputs than o_proj has inputs).
    """

    prev: str
    linears: tuple[str, ...]
    inspect: str = ""
    kwargs: bool = False
    optional: bool = False


#: Normalizations of derived image processors (`VisionSpec.image_mean` / `image_std`).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF_MEAN, HALF_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class VisionSpec:
    """Where a family turns preprocessed pixels into language-model embeddings (what export-vit exports).

    Paths are relative to the loaded top-level model. `kind` names the vision path in
    `vlq/export/paths.py` that runs tower and projector with the family's own steps in between
    (LLaVA's feature-layer selection and CLS drop, Qwen2-VL's grid positions); `features` is the
    method the VLM calls for image embeddings, which a runtime backend (onnxruntime, TensorRT)
    replaces. `projector` may sit inside the tower (Qwen2-VL's merger). Kind "features" exports
    the `features` method itself (traced as the model runs it); an empty `features` means the
    model has no such method and runs `projector(tower(pixels))` inline (DeepSeek-VL's remote
    code): that composition is exported, and no runtime backend can be plugged in.
    """

    kind: str
    tower: str
    projector: str
    features: str
    #: Pixel arguments of `features`, in call order (the exported graph's input names). Read by
    #: kind "features"; the llava and qwen2_vl paths name their own inputs.
    inputs: tuple[str, ...] = ("pixel_values",)
    #: Per input, the config attribute (dotted, relative to the model config; `a|b` tries `a` first)
    #: that holds its image side (an int, or [height, width]). Kind "features" only.
    image_sizes: tuple[str, ...] = ()
    #: What `features` returns: "pooler_output" (a ModelOutput holding the embeddings, transformers'
    #: native models) or "tensor" (remote-code methods such as InternVL-Chat's `extract_feature`).
    returns: str = "pooler_output"
    #: Normalization of the processor vlq derives for checkpoints that ship none (remote code
    #: preprocesses in Python); images are resized straight to the tower's size, as those do.
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    #: Other modules the path runs besides tower and projector (Mini-Gemini's ConvNeXt and
    #: patch-mining projectors): part of the export's weight fingerprint.
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    """One model family: matched by architecture name or model_type, described by module paths."""

    name: str
    architectures: tuple[str, ...]
    layers: str
    scale_groups: tuple[ScaleGroup, ...]
    model_types: tuple[str, ...] = ()
    #: Modules that stay 16 bit (vision tower, projector, lm_head...), as name fragments that
    #: AutoAWQ-format loaders match by substring against both checkpoint keys and module names;
    #: written to `modules_to_not_convert`.
    keep_16bit: tuple[str, ...] = ()
    #: Child modules of a quantized linear that read the same input (PLoRA's `Plora_A`): they are
    #: scaled with the linear so that folding stays exact, and never quantized.
    input_sharers: tuple[str, ...] = ()
    #: Child modules of a linear whose output adds into the linear's output (PLoRA's `Plora_B`):
    #: divided with it when the linear is the previous op of a scale group.
    output_sharers: tuple[str, ...] = ()
    #: Linears whose clipping is not searched (AWQ leaves q/k alone: attention logits are sensitive).
    no_clip: tuple[str, ...] = ("q_proj", "k_proj")
    #: Module called with `input_ids` for text-only calibration: empty for the whole model, a path
    #: where the wrapper's forward needs images (InternVL-Chat: `language_model`).
    text_model: str = ""
    #: transformers auto class that loads the checkpoint.
    auto_class: str = "AutoModelForImageTextToText"
    trust_remote_code: bool = False
    examples: tuple[str, ...] = ()
    notes: str = ""
    #: Linears quantized without a scale group (no previous op can absorb a scale, e.g. InternLM2's
    #: `attention.wo` after the fused `wqkv`).
    unscaled_linears: tuple[str, ...] = ()
    #: For wrappers whose LLM varies by size (InternVL-Chat: InternLM2, Phi-3, Qwen2, Llama): the
    #: LLM architectures (`llm_config.architectures`) this family entry handles; empty matches any.
    llm_architectures: tuple[str, ...] = ()
    #: The vision path (tower + projector) that export-vit exports; None for text-only families.
    vision: VisionSpec | None = None

    def quantized_linears(self) -> tuple[str, ...]:
        """Names, relative to a decoder layer, of every linear that gets 4-bit weights."""
        grouped = (name for group in self.scale_groups for name in group.linears)
        return tuple(dict.fromkeys((*grouped, *self.unscaled_linears)))

    def quantized_linear_names(self, num_layers: int) -> list[str]:
        """Full module names of the quantized linears of a model with `num_layers` decoder layers."""
        return [f"{self.layers}.{i}.{name}" for i in range(num_layers) for name in self.quantized_linears()]


@dataclass
class ResolvedGroup:
    """A `ScaleGroup` bound to the modules of one decoder layer."""

    group: ScaleGroup
    prev: nn.Module
    linears: list[nn.Linear]
    inspect: nn.Module


def get_module(root: nn.Module, path: str) -> nn.Module:
    """`root.a.b.0.c` for path `a.b.0.c`; empty path is root."""
    return root.get_submodule(path) if path else root


def _out_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    weight = getattr(module, "weight", None)
    return weight.shape[0] if weight is not None else None


def resolve_groups(family: Family, layer: nn.Module, layer_index: int, group_size: int) -> list[ResolvedGroup]:
    """Bind a layer's scale groups to modules; check shapes and group-size divisibility."""
    resolved = []
    for group in family.scale_groups:
        where = f"{family.name} layer {layer_index}"
        try:
            prev = get_module(layer, group.prev)
            linears = [get_module(layer, name) for name in group.linears]
            inspect = get_module(layer, group.inspect) if group.inspect else linears[0]
        except AttributeError as exc:
            raise InputError(f"{where}: module not found ({exc}); is this checkpoint really {family.name}?") from None
        in_features = {lin.in_features for lin in linears}
        if len(in_features) != 1:
            raise InputError(f"{where}: linears {group.linears} do not share an input size")
        (width,) = in_features
        if _out_features(prev) != width:
            if group.optional:
                continue
            raise InputError(f"{where}: {group.prev} has {_out_features(prev)} outputs, {group.linears} read {width}")
        for name, lin in zip(group.linears, linears):
            if lin.out_features % 8:
                raise InputError(f"{where}: {name} has {lin.out_features} outputs, not a multiple of 8 (AWQ packing)")
            if lin.in_features % group_size:
                raise InputError(
                    f"--w-group-size {group_size} does not divide in_features {lin.in_features} "
                    f"of {family.name} layer {layer_index} {name}"
                )
        resolved.append(ResolvedGroup(group, prev, linears, inspect))
    return resolved
