"""Tiny VLM checkpoints generated locally from configs: the built-in default and the test models.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in a second on the shipped
calibration text, the image processor is configured in code, the weights are random (seeded).
The folders look exactly like hub checkpoints, so every vlq command treats them as real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlq.calib.data import shipped_text_path

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)
QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

#: A plain chat template: user turns may hold an image and text; the generation prompt is "ASSISTANT:".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tokenizer(vocab_size: int = 1024, extra_special: tuple[str, ...] = ()):
    """A byte-level BPE tokenizer trained on the shipped wikitext-2 text, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS) + list(extra_special)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(shipped_text_path("wikitext2", "valid"))], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN, *extra_special],
        chat_template=CHAT_TEMPLATE,
    )


def _text_config_kwargs(tokenizer, hidden: int, layers: int) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_llava(folder: str | Path, hidden: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """A LLaVA-1.5-shaped checkpoint (CLIP ViT + MLP projector + Llama) with processor files."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    tokenizer = build_tokenizer()
    image_size, patch = 32, 8
    config = LlavaConfig(
        text_config=LlamaConfig(**_text_config_kwargs(tokenizer, hidden, layers)),
        vision_config=CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
            projection_dim=64,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(image_size // patch) ** 2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    return folder


def build_tiny_qwen2_vl(folder: str | Path, hidden: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """A Qwen2-VL-shaped checkpoint (native transformers classes, M-RoPE) with its tokenizer."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

    folder = Path(folder)
    tokenizer = build_tokenizer(extra_special=QWEN_VISION_TOKENS)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_VISION_TOKENS}
    head_dim = hidden // 4
    text = _text_config_kwargs(tokenizer, hidden, layers)
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [head_dim // 8, head_dim // 8 * 3 // 2, head_dim // 8 * 3 // 2]}
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=2, embed_dim=64, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=14),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # The image processor alone (the full Qwen2VLProcessor needs torchvision for video).
    Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2).save_pretrained(folder)
    return folder


def build_tiny_llama(folder: str | Path, hidden: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """A plain Llama causal LM: what the generic fallback and text-only paths are tested on."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**_text_config_kwargs(tokenizer, hidden, layers), tie_word_embeddings=False))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TINY_BUILDERS = {"llava": build_tiny_llava, "qwen2_vl": build_tiny_qwen2_vl, "llama": build_tiny_llama}
