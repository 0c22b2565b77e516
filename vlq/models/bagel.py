"""BAGEL-7B-MoT: a Qwen2 Mixture-of-Transformers with understanding and generation experts per layer.

Each decoder layer holds two weight sets: understanding (`self_attn.q_proj`, `mlp`, norms) and
generation (`self_attn.q_proj_moe_gen`, `mlp_moe_gen`, `*_moe_gen` norms). Calibration text runs
through the understanding path only, so the generation expert sees no calibration data: vlq
quantizes the understanding expert and keeps the generation expert, SigLIP ViT, connectors and VAE
bridges in 16 bit. Of BAGEL's ~29 GB in bf16, the understanding linears (~6.5B parameters, ~13 GB)
shrink to ~3.4 GB: about 19-20 GB total, with image generation quality untouched.
"""

from __future__ import annotations

from vlq.models.base import HALF_MEAN, HALF_STD, Family, VisionSpec
from vlq.models.llama_like import LLAMA_SCALE_GROUPS

BAGEL = Family(
    name="bagel",
    architectures=("Bagel", "BagelForCausalLM"),
    model_types=("bagel",),
    layers="language_model.model.layers",
    scale_groups=LLAMA_SCALE_GROUPS,
    keep_16bit=("moe_gen", "vit_model", "connector", "vit_pos_embed", "time_embedder", "vae2llm", "llm2vae",
                "latent_pos_embed", "lm_head"),
    auto_class="AutoModelForCausalLM",
    trust_remote_code=True,
    examples=("ByteDance-Seed/BAGEL-7B-MoT",),
    notes="generation expert (`*_moe_gen`) kept 16 bit: text calibration never exercises it",
    # NaViT SigLIP over packed patches of any image size; `embed_vit_tokens` adds the connector and
    # the 2D position table (`vit_pos_embed`).
    vision=VisionSpec(
        "navit",
        "vit_model",
        "connector",
        "embed_vit_tokens",
        image_mean=HALF_MEAN,
        image_std=HALF_STD,
        parts=("vit_pos_embed",),
    ),
)

FAMILIES = (BAGEL,)
