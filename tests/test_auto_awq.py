"""`auto_awq` end to end on tiny generated checkpoints (CPU, seconds each)."""

import json

import pytest
import torch
from helpers import checkpoint_tensors

from vlq.awq.pipeline import AutoAwqOptions, auto_awq
from vlq.loading import load_vlm
from vlq.tiny import build_tiny_llama


def _options(model, out, **overrides):
    settings = dict(model=str(model), work_dir=str(out), calib_samples=8, calib_seqlen=64, device="cpu")
    settings.update(overrides)
    return AutoAwqOptions(**settings)


def test_output_is_autoawq_gemm_and_16bit_parts_are_bit_identical(tiny_llava, quantized_llava):
    out = quantized_llava.output_dir
    config = json.loads((out / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "awq" and qc["bits"] == 4 and qc["group_size"] == 128
    assert qc["zero_point"] is True and qc["version"] == "gemm"
    assert {"vision_tower", "multi_modal_projector", "lm_head"} <= set(qc["modules_to_not_convert"])

    source, quantized = checkpoint_tensors(tiny_llava), checkpoint_tensors(out)
    q_proj = "language_model.model.layers.0.self_attn.q_proj"
    assert quantized[f"{q_proj}.qweight"].dtype == torch.int32
    assert quantized[f"{q_proj}.qweight"].shape == (128, 128 // 8)
    assert quantized[f"{q_proj}.qzeros"].shape == (1, 128 // 8)
    assert quantized[f"{q_proj}.scales"].shape == (1, 128) and quantized[f"{q_proj}.scales"].dtype == torch.float16
    assert f"{q_proj}.weight" not in quantized
    kept = [k for k in source if k.startswith(("vision_tower", "multi_modal_projector", "lm_head")) or "embed_tokens" in k]
    assert kept and all(torch.equal(source[k], quantized[k]) for k in kept)
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja",
                 "generation_config.json", "vlq_report.json"):
        assert (out / name).is_file(), name


def test_report_has_per_layer_time_errors_and_options(quantized_llava):
    report = json.loads(quantized_llava.report_path.read_text())
    assert report["family"] == "llava" and report["options"]["search_scale"] is True
    assert len(report["layers"]) == 2
    for layer in report["layers"]:
        assert layer["seconds"] > 0 and layer["rtn_error"] > 0 and layer["awq_error"] > 0
        assert layer["awq_error"] <= layer["rtn_error"]
    assert report["totals"]["layers"] == 2 and report["calibration_source"].startswith("shipped:ptb")


def test_quantized_folder_loads_and_stays_close_to_16bit(tiny_llava, quantized_llava):
    from vlq.kernels.linear import AwqLinear

    fp, q = load_vlm(tiny_llava, device="cpu"), load_vlm(quantized_llava.output_dir, device="cpu")
    assert q.quantized and isinstance(q.model.model.language_model.layers[1].mlp.down_proj, AwqLinear)
    assert not isinstance(q.model.lm_head, AwqLinear)
    ids = fp.tokenizer("the market closed higher on friday", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = fp.model(input_ids=ids).logits, q.model(input_ids=ids).logits
    assert torch.isfinite(b).all()
    cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    assert cosine > 0.95
    generated = q.model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5


def test_cpu_inference_computes_a_float16_checkpoint_in_float32(quantized_llava):
    """On the CPU `auto` means float32 for a float16 checkpoint (fp16 matmuls crawl on most CPUs);
    an explicit float16 is kept, and a quantized model's float16 scales feed float32 activations."""
    from vlq.reference import reference_model_dir

    assert json.loads((reference_model_dir() / "config.json").read_text())["dtype"] == "float16"
    auto = load_vlm(reference_model_dir(), device="cpu").model
    assert {p.dtype for p in auto.parameters()} == {torch.float32}
    asked = load_vlm(reference_model_dir(), device="cpu", dtype="float16").model
    assert {p.dtype for p in asked.parameters()} == {torch.float16}
    down = load_vlm(quantized_llava.output_dir, device="cpu").model.model.language_model.layers[1].mlp.down_proj
    assert down.scales.dtype == torch.float16 and down(torch.randn(2, down.in_features)).dtype == torch.float32


def test_batch_size_does_not_change_the_weights(tiny_llava, tmp_path):
    one = auto_awq(_options(tiny_llava, tmp_path / "bs1", batch_size=1, search_scale=True))
    four = auto_awq(_options(tiny_llava, tmp_path / "bs4", batch_size=4, search_scale=True))
    a, b = checkpoint_tensors(one.output_dir), checkpoint_tensors(four.output_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fixture", ["tiny_qwen2_vl", "tiny_llama"])
def test_other_layouts_quantize_and_load(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    result = auto_awq(_options(model, tmp_path / "out", w_group_size=64))
    expected = {"tiny_qwen2_vl": "qwen2_vl", "tiny_llama": "generic"}[fixture]
    assert result.family == expected
    if fixture == "tiny_qwen2_vl":
        assert "visual" in result.modules_to_not_convert
    loaded = load_vlm(result.output_dir, device="cpu")
    ids = torch.randint(5, 500, (1, 12))
    with torch.no_grad():
        assert torch.isfinite(loaded.model(input_ids=ids).logits).all()


def test_awq_beats_rtn_on_planted_activation_outliers(tmp_path):
    """Outlier input channels (as real LLMs have) are what AWQ protects and RTN does not."""
    from transformers import LlamaForCausalLM

    folder = build_tiny_llama(tmp_path / "outliers", seed=3)
    model = LlamaForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[:4] = 25.0  # four channels with large activations
    model.save_pretrained(folder)
    result = auto_awq(_options(folder, tmp_path / "out", search_scale=True, w_group_size=64))
    for layer in result.layers:
        assert layer.awq_error < 0.7 * layer.rtn_error, layer
