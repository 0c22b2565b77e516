"""Remote-code families on tiny fixture folders that carry their own modeling code.

Each folder loads through `trust_remote_code` like a real checkpoint. Per family: auto-awq runs,
16-bit weights stay bit-identical, the quantized folder loads through vlq's runner with logits
close to the 16-bit model's, and `inspect` shows the family's scale groups.
"""

import pytest
import torch
from helpers import checkpoint_tensors
from safetensors.torch import save_file

from vlq.awq.pipeline import AutoAwqOptions, auto_awq
from vlq.fixtures import make_tiny_checkpoint
from vlq.inspect import inspect_model
from vlq.loading import load_vlm
from vlq.models.base import get_module

#: family -> (vlq family name, expected first scale group, key fragments that must stay 16 bit)
EXPECTED = {
    "internvl_chat": ("internvl_chat", ("attention_norm", ["attention.wqkv"]), ("vision_model.", "mlp1.")),
    "internlm_xcomposer2": ("internlm_xcomposer2", ("attention_norm", ["attention.wqkv"]), ("vit.", "vision_proj.")),
    "qwen_vl": ("qwen_vl", ("ln_1", ["attn.c_attn"]), ("transformer.visual.",)),
    "deepseek_vl": ("deepseek_vl_remote", ("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]), ("vision_model.", "aligner.")),
    "mini_gemini": ("mini_gemini", ("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]), ("vision_tower", "mm_projector", "vlm_uni")),
    "bagel": ("bagel", ("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]), ("moe_gen", "vit_model", "connector")),
}


def _logits(loaded, ids):
    runner = get_module(loaded.model, loaded.family.text_model)
    with torch.no_grad():
        return runner(input_ids=ids).logits.float()


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_remote_family_end_to_end(fixture, tmp_path):
    family, first_group, kept_fragments = EXPECTED[fixture]
    source = make_tiny_checkpoint(fixture, tmp_path / "src")

    report = inspect_model(str(source))
    assert report.family == family
    assert (report.scale_groups[0].prev, report.scale_groups[0].linears) == first_group

    result = auto_awq(AutoAwqOptions(model=str(source), work_dir=str(tmp_path / "out"), calib_samples=4,
                                     calib_seqlen=32, device="cpu", search_scale=True))
    assert result.family == family
    assert all(layer.awq_error <= layer.rtn_error for layer in result.layers)

    original, quantized = checkpoint_tensors(source), checkpoint_tensors(result.output_dir)
    kept = [k for k in original if any(fragment in k for fragment in kept_fragments)]
    assert kept
    for key in kept:
        assert torch.equal(original[key], quantized[key]), key

    fp = load_vlm(source, device="cpu")
    q = load_vlm(result.output_dir, device="cpu")
    ids = torch.randint(10, 400, (1, 16))
    a, b = _logits(fp, ids), _logits(q, ids)
    assert torch.isfinite(b).all()
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.95


def test_xcomposer2_plora_branches_stay_16bit_and_still_act_on_image_tokens(tmp_path):
    """PLoRA weights are scaled with their linear (folding stays exact) but never packed, and the
    loaded 4-bit model still adds the branch where `im_mask` is set."""
    source = make_tiny_checkpoint("internlm_xcomposer2", tmp_path / "src")
    weights = checkpoint_tensors(source)  # Plora_B starts at zero, as LoRA does: give the branches an effect
    generator = torch.Generator().manual_seed(0)
    for key in [k for k in weights if "Plora_B" in k]:
        weights[key] = torch.randn(weights[key].shape, generator=generator) * 0.05
    save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
    result = auto_awq(AutoAwqOptions(model=str(source), work_dir=str(tmp_path / "out"), calib_samples=4,
                                     calib_seqlen=32, device="cpu", search_scale=True))
    quantized = checkpoint_tensors(result.output_dir)
    plora = [k for k in quantized if "Plora_" in k]
    assert plora and all(quantized[k].is_floating_point() for k in plora)
    assert "model.layers.0.attention.wqkv.qweight" in quantized

    fp = load_vlm(source, device="cpu").model
    q = load_vlm(result.output_dir, device="cpu").model
    ids = torch.randint(10, 400, (1, 16))
    image_tokens = torch.zeros(1, 16, dtype=torch.bool)
    image_tokens[:, 2:10] = True

    def branch_effect(model):
        with torch.no_grad():
            embeds = model.model.tok_embeddings(ids)  # im_mask marks positions of inputs_embeds, as upstream
            with_branch = model(inputs_embeds=embeds, im_mask=image_tokens).logits.float()
            without = model(inputs_embeds=embeds, im_mask=torch.zeros_like(image_tokens)).logits.float()
        return (with_branch - without).flatten()

    fp_effect, q_effect = branch_effect(fp), branch_effect(q)
    assert fp_effect.abs().max() > 0  # the branch matters on image tokens
    assert torch.nn.functional.cosine_similarity(fp_effect, q_effect, dim=0) > 0.9
