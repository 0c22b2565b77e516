"""Families whose language model is a Llama-style decoder (q/k/v/o, gate/up/down, two RMSNorms).

They share one list of scale groups; each family only says where its layers and vision parts are.
"""

from __future__ import annotations

from vlq.models.base import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD, Family, ScaleGroup, VisionSpec

LLAMA_SCALE_GROUPS = (
    ScaleGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn", kwargs=True),
    ScaleGroup("self_attn.v_proj", ("self_attn.o_proj",), optional=True),
    ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
    ScaleGroup("mlp.up_proj", ("mlp.down_proj",)),
)

LLAVA = Family(
    name="llava",
    architectures=("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration"),
    model_types=("llava", "llava_next"),
    layers="model.language_model.layers",
    scale_groups=LLAMA_SCALE_GROUPS,
    keep_16bit=("vision_tower", "multi_modal_projector", "lm_head"),
    examples=("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-v1.6-mistral-7b-hf", "BUAADreamer/Yi-VL-6B-hf"),
    notes="Yi-VL converted to the llava-hf layout is LLaVA with a Yi (Llama-shaped) LLM.",
    vision=VisionSpec("llava", "model.vision_tower", "model.multi_modal_projector", "model.get_image_features"),
)

QWEN2_VL = Family(
    name="qwen2_vl",
    architectures=("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"),
    model_types=("qwen2_vl", "qwen2_5_vl"),
    layers="model.language_model.layers",
    scale_groups=LLAMA_SCALE_GROUPS,
    keep_16bit=("visual", "lm_head"),
    examples=("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"),
    vision=VisionSpec("qwen2_vl", "model.visual", "model.visual.merger", "model.get_image_features"),
)

INTERNVL_NATIVE = Family(
    name="internvl",
    architectures=("InternVLForConditionalGeneration",),
    model_types=("internvl",),
    layers="model.language_model.layers",
    scale_groups=LLAMA_SCALE_GROUPS,
    keep_16bit=("vision_tower", "multi_modal_projector", "lm_head"),
    examples=("OpenGVLab/InternVL3-1B-hf", "OpenGVLab/InternVL2_5-2B-MPO-hf"),
    notes="transformers' native InternVL (-hf checkpoints): InternViT + pixel-shuffle MLP + Qwen2/Llama.",
    vision=VisionSpec(
        "features",
        "model.vision_tower",
        "model.multi_modal_projector",
        "model.get_image_features",
        image_sizes=("vision_config.image_size",),
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ),
)

DEEPSEEK_VL_NATIVE = Family(
    name="deepseek_vl",
    architectures=("DeepseekVLForConditionalGeneration", "DeepseekVLHybridForConditionalGeneration"),
    model_types=("deepseek_vl", "deepseek_vl_hybrid"),
    layers="model.language_model.layers",
    scale_groups=LLAMA_SCALE_GROUPS,
    keep_16bit=("vision_model", "high_res_vision", "aligner", "lm_head"),
    examples=("deepseek-community/deepseek-vl-1.3b-chat", "deepseek-community/deepseek-vl-7b-chat"),
    notes="transformers' native DeepSeek-VL: SigLIP (+ SAM high-res in the hybrid) vision, aligner, Llama.",
    # The hybrid's get_image_features also takes high_res_pixel_values: export-vit refuses it by name.
    vision=VisionSpec(
        "features",
        "model.vision_model",
        "model.aligner",
        "model.get_image_features",
        image_sizes=("vision_config.image_size",),
    ),
)

DEEPSEEK_VL_REMOTE = Family(
    name="deepseek_vl_remote",
    architectures=("MultiModalityCausalLM",),
    model_types=("multi_modality",),
    layers="language_model.model.layers",
    text_model="language_model",
    scale_groups=LLAMA_SCALE_GROUPS,
    keep_16bit=("vision_model", "aligner", "lm_head"),
    auto_class="AutoModelForCausalLM",
    trust_remote_code=True,
    examples=("deepseek-ai/deepseek-vl-1.3b-chat", "deepseek-ai/deepseek-vl-7b-chat"),
    notes="remote code (deepseek_vl package layout): SigLIP/SAM vision, aligner, Llama `language_model`",
    # No image-features method: `prepare_inputs_embeds` runs aligner(vision_model(x)) inline.
    vision=VisionSpec(
        "features",
        "vision_model",
        "aligner",
        "",
        image_sizes=("vision_config.params.image_size",),
        image_mean=HALF_MEAN,
        image_std=HALF_STD,
    ),
)

MINI_GEMINI = Family(
    name="mini_gemini",
    architectures=("MGMLlamaForCausalLM", "MiniGeminiLlamaForCausalLM"),
    model_types=("mgm", "mini_gemini"),
    layers="model.layers",
    scale_groups=LLAMA_SCALE_GROUPS,
    keep_16bit=("vision_tower", "vision_tower_aux", "mm_projector", "vlm_uni", "lm_head"),
    auto_class="AutoModelForCausalLM",
    trust_remote_code=True,
    examples=("YanweiLi/MGM-7B", "YanweiLi/MGM-13B-HD"),
    notes="remote code: CLIP + ConvNeXt (high-resolution) encoders, projectors, Llama decoder",
    # Kind mini_gemini: encode_images with the batch axis kept symbolic (upstream reshapes with len()).
    vision=VisionSpec(
        "mini_gemini",
        "model.vision_tower",
        "model.mm_projector",
        "encode_images",
        inputs=("images", "images_aux"),
        image_sizes=(
            "vision_tower_config.image_size|module:model.vision_tower.vision_tower.config.image_size",
            "image_size_aux",
        ),
        returns="tensor",
        parts=(
            "model.vision_tower_aux",
            "model.vlm_uni_query_projector",
            "model.vlm_uni_aux_projector",
            "model.vlm_uni_val_projector",
        ),
    ),
)

FAMILIES = (LLAVA, QWEN2_VL, INTERNVL_NATIVE, DEEPSEEK_VL_NATIVE, DEEPSEEK_VL_REMOTE, MINI_GEMINI)
