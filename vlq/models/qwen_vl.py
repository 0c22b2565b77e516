"""Qwen-VL / Qwen-VL-Chat (v1, remote code): a QWen decoder under `transformer.h`.

QWen's MLP computes `c_proj(w1(x) * silu(w2(x)))`, linear in w1's output, so `w1 -> c_proj` folds;
`attn.c_proj` follows the fused `c_attn` and is quantized without a scale group.
"""

from __future__ import annotations

from vlq.models.base import Family, ScaleGroup, VisionSpec

QWEN_VL = Family(
    name="qwen_vl",
    architectures=("QWenLMHeadModel",),
    model_types=("qwen",),
    layers="transformer.h",
    scale_groups=(
        ScaleGroup("ln_1", ("attn.c_attn",), "attn", kwargs=True),
        ScaleGroup("ln_2", ("mlp.w1", "mlp.w2"), "mlp"),
        ScaleGroup("mlp.w1", ("mlp.c_proj",)),
    ),
    unscaled_linears=("attn.c_proj",),
    no_clip=("c_attn",),
    keep_16bit=("visual", "lm_head"),
    auto_class="AutoModelForCausalLM",
    trust_remote_code=True,
    examples=("Qwen/Qwen-VL-Chat", "Qwen/Qwen-VL"),
    notes="remote code: ViT + resampler at `transformer.visual`, QWen decoder",
    # `visual.encode(paths)` calls `visual(images)`: its forward is the image-features method.
    vision=VisionSpec(
        "features",
        "transformer.visual",
        "transformer.visual.attn_pool",
        "transformer.visual.forward",
        image_sizes=("visual.image_size",),
        returns="tensor",
    ),
)

FAMILIES = (QWEN_VL,)
