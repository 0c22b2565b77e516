"""Families built on InternLM2 (fused `wqkv`, `feed_forward.w1/w3/w2`): InternVL-Chat and XComposer2.

InternLM2's fused `wqkv` has more outputs than `wo` has inputs, so `wo` has no scale group and is
quantized as is; `w3 -> w2` folds because w2 reads `act(w1 x) * w3 x`, linear in w3's output.
InternVL-Chat wraps different LLMs by size (InternLM2, Phi-3, Qwen2, Llama): one entry per LLM.
"""

from __future__ import annotations

from vlq.models.base import IMAGENET_MEAN, IMAGENET_STD, Family, ScaleGroup, VisionSpec
from vlq.models.llama_like import LLAMA_SCALE_GROUPS

INTERNLM2_SCALE_GROUPS = (
    ScaleGroup("attention_norm", ("attention.wqkv",), "attention", kwargs=True),
    ScaleGroup("ffn_norm", ("feed_forward.w1", "feed_forward.w3"), "feed_forward"),
    ScaleGroup("feed_forward.w3", ("feed_forward.w2",)),
)

#: Phi-3 fuses q/k/v and gate/up; down_proj reads `act(gate) * up`, half of gate_up's rows, and o_proj
#: follows the fused qkv: both are quantized without a scale group.
PHI3_SCALE_GROUPS = (
    ScaleGroup("input_layernorm", ("self_attn.qkv_proj",), "self_attn", kwargs=True),
    ScaleGroup("post_attention_layernorm", ("mlp.gate_up_proj",), "mlp"),
)

_INTERNVL_CHAT = dict(
    architectures=("InternVLChatModel",),
    model_types=("internvl_chat",),
    layers="language_model.model.layers",
    text_model="language_model",
    keep_16bit=("vision_model", "mlp1", "language_model.output", "language_model.lm_head"),
    auto_class="AutoModel",
    trust_remote_code=True,
    vision=VisionSpec(
        "features",
        "vision_model",
        "mlp1",
        "extract_feature",
        image_sizes=("force_image_size|vision_config.image_size",),
        returns="tensor",
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ),
)

INTERNVL_CHAT_INTERNLM2 = Family(
    name="internvl_chat",
    scale_groups=INTERNLM2_SCALE_GROUPS,
    unscaled_linears=("attention.wo",),
    no_clip=("wqkv",),
    llm_architectures=("InternLM2ForCausalLM",),
    examples=("OpenGVLab/Mini-InternVL-Chat-2B-V1-5", "OpenGVLab/InternVL2-8B", "OpenGVLab/InternVL-Chat-V1-5"),
    notes="remote code: InternViT `vision_model` + pixel-shuffle `mlp1` + InternLM2",
    **_INTERNVL_CHAT,
)

INTERNVL_CHAT_PHI3 = Family(
    name="internvl_chat_phi3",
    scale_groups=PHI3_SCALE_GROUPS,
    unscaled_linears=("self_attn.o_proj", "mlp.down_proj"),
    no_clip=("qkv_proj",),
    llm_architectures=("Phi3ForCausalLM",),
    examples=("OpenGVLab/Mini-InternVL-Chat-4B-V1-5", "OpenGVLab/InternVL2-4B"),
    notes="remote code: InternViT + `mlp1` + Phi-3 (fused qkv_proj / gate_up_proj)",
    **_INTERNVL_CHAT,
)

INTERNVL_CHAT_LLAMA_LIKE = Family(
    name="internvl_chat_qwen2_llama",
    scale_groups=LLAMA_SCALE_GROUPS,
    llm_architectures=("Qwen2ForCausalLM", "LlamaForCausalLM"),
    examples=("OpenGVLab/InternVL2-1B", "OpenGVLab/InternVL2_5-8B"),
    notes="remote code: InternViT + `mlp1` + Qwen2 or Llama",
    **_INTERNVL_CHAT,
)

XCOMPOSER2 = Family(
    name="internlm_xcomposer2",
    architectures=("InternLMXComposer2ForCausalLM",),
    model_types=("internlmxcomposer2",),
    layers="model.layers",
    scale_groups=INTERNLM2_SCALE_GROUPS,
    unscaled_linears=("attention.wo",),
    no_clip=("wqkv",),
    keep_16bit=("vit", "vision_proj", "output", "Plora_A", "Plora_B"),
    input_sharers=("Plora_A",),
    output_sharers=("Plora_B",),
    auto_class="AutoModelForCausalLM",
    trust_remote_code=True,
    examples=("internlm/internlm-xcomposer2-vl-7b", "internlm/internlm-xcomposer2-4khd-7b"),
    notes="remote code: InternLM2 whose linears carry PLoRA branches (16 bit, applied on image tokens)",
    vision=VisionSpec(
        "features",
        "vit",
        "vision_proj",
        "encode_img",
        image_sizes=("vision_config.image_size|module:vit.vision_tower.config.image_size",),
        returns="tensor",
    ),
)

FAMILIES = (INTERNVL_CHAT_INTERNLM2, INTERNVL_CHAT_PHI3, INTERNVL_CHAT_LLAMA_LIKE, XCOMPOSER2)
