"""Native transformers families beyond LLaVA / Qwen2-VL: detected, quantized, 16-bit parts untouched."""

import pytest
import torch

from vlq.awq.pipeline import AutoAwqOptions, auto_awq
from vlq.inspect import inspect_model
from vlq.loading import load_vlm
from vlq.tiny import build_tokenizer

TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)


def _internvl(folder):
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    tok = build_tokenizer()
    config = InternVLConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tok), **TEXT),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                           image_size=[28, 28], patch_size=[14, 14]),
    )
    return InternVLForConditionalGeneration(config), tok, ("model.vision_tower", "model.multi_modal_projector")


def _deepseek_vl(folder):
    from transformers import DeepseekVLConfig, DeepseekVLForConditionalGeneration

    tok = build_tokenizer()
    config = DeepseekVLConfig(
        text_config=dict(vocab_size=len(tok), **TEXT),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    return DeepseekVLForConditionalGeneration(config), tok, ("model.vision_model", "model.aligner")


@pytest.mark.parametrize("builder,family", [(_internvl, "internvl"), (_deepseek_vl, "deepseek_vl")])
def test_native_family_quantizes_and_keeps_vision_bit_identical(builder, family, tmp_path):
    torch.manual_seed(0)
    model, tokenizer, vision_parts = builder(tmp_path)
    source = tmp_path / "src"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    assert inspect_model(str(source)).family == family

    result = auto_awq(AutoAwqOptions(model=str(source), work_dir=str(tmp_path / "out"), calib_samples=4,
                                     calib_seqlen=32, device="cpu", search_scale=True))
    assert result.family == family
    loaded = load_vlm(result.output_dir, device="cpu")
    original = model.eval().state_dict()
    quantized = loaded.model.state_dict()
    kept = [k for k in original if k.startswith(vision_parts) or k.startswith("lm_head")]
    assert kept and all(torch.equal(original[k], quantized[k]) for k in kept)
    ids = torch.randint(10, 500, (1, 16))
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = loaded.model(input_ids=ids).logits
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.95


def test_unsupported_architecture_is_a_clear_error_listing_families(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    from typer.testing import CliRunner

    from vlq.cli import app

    GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=128)).save_pretrained(tmp_path / "gpt2")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "gpt2")])
    assert result.exit_code == 3
    assert "unsupported architecture GPT2LMHeadModel" in result.output
    assert "llava" in result.output and "internlm_xcomposer2" in result.output and "vlq/models/" in result.output
