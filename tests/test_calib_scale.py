"""Calibration at scale: Gram-matrix searches, streamed checkpoints, resume (CPU, tiny models)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import checkpoint_tensors
from safetensors.torch import load_file, save_file

from vlq.awq.gram import add_block_gram, add_gram, quadratic_error, scale_block_gram, search_clip_gram
from vlq.awq.partial import STATE_NAME, partial_dir
from vlq.awq.pipeline import AutoAwqOptions, auto_awq
from vlq.awq.quantize import fake_quantize
from vlq.calib.shards import ShardedCheckpoint, write_tensors
from vlq.calib.stream import find_layer_prefix
from vlq.errors import InputError
from vlq.loading import load_vlm
from vlq.tiny import build_tiny_llama


def _options(model, out, **overrides):
    settings = dict(model=str(model), work_dir=str(out), calib_samples=6, calib_seqlen=32, device="cpu")
    settings.update(overrides)
    return AutoAwqOptions(**settings)


# --- pure pieces ------------------------------------------------------------------------------


def test_shards_round_trip_with_the_safetensors_library(tmp_path):
    tensors = {
        "a.weight": torch.randn(3, 5).half(),
        "b": torch.randn(7).bfloat16(),
        "c": torch.arange(10, dtype=torch.int32).reshape(2, 5),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "mask": torch.tensor([True, False]),
    }
    write_tensors(tmp_path / "model.safetensors", tensors)
    back = load_file(tmp_path / "model.safetensors")
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)

    other = tmp_path / "other"
    other.mkdir()
    save_file(tensors, other / "model.safetensors")
    checkpoint = ShardedCheckpoint.open(other)
    assert all(torch.equal(checkpoint.read(k), tensors[k]) for k in tensors)
    assert checkpoint.read("a.weight", torch.float32).dtype == torch.float32
    assert checkpoint.read("c", torch.float32).dtype == torch.int32  # integers are never cast


def test_layer_prefix_is_found_from_the_data_whatever_transformers_renames():
    names = [["input_layernorm.weight", "self_attn.q_proj.weight"]] * 2
    llava = {f"language_model.model.layers.{i}.{n}" for i in range(2) for n in names[0]}
    vision = {f"vision_tower.vision_model.encoder.layers.{i}.self_attn.q_proj.weight" for i in range(2)}
    keys = llava | vision | {"language_model.model.embed_tokens.weight"}
    assert find_layer_prefix(keys, names, "model.language_model.layers") == "language_model.model.layers"
    with pytest.raises(InputError, match="do not match"):
        find_layer_prefix(keys - {"language_model.model.layers.1.self_attn.q_proj.weight"}, names, "x.layers")
    both = keys | {k.replace("language_model.model", "text.model") for k in llava}
    assert find_layer_prefix(both, names, "model.language_model.layers") == "language_model.model.layers"


def test_gram_errors_equal_the_direct_output_errors():
    torch.manual_seed(0)
    x = torch.randn(2, 40, 64, dtype=torch.float64)
    w = torch.randn(24, 64, dtype=torch.float64)
    gram = torch.zeros(64, 64)
    blocks = torch.zeros(4, 16, 16, dtype=torch.float64)
    for sample in x:
        add_gram(gram, sample.float())
        add_block_gram(blocks, sample, 16)
    delta = fake_quantize(w, 4, 16) - w
    direct = float((x.reshape(-1, 64) @ delta.t()).pow(2).sum())
    assert quadratic_error(delta, gram) == pytest.approx(direct, rel=1e-5)
    per_group = (x.reshape(-1, 4, 16)[:, None] * delta.reshape(1, 24, 4, 16)).sum(-1).pow(2).sum(0)
    assert torch.allclose(torch.einsum("rgi,gij,rgj->rg", delta.reshape(24, 4, 16), blocks, delta.reshape(24, 4, 16)), per_group)
    s = torch.rand(64, dtype=torch.float64) + 0.5
    scaled = torch.zeros_like(blocks)
    for sample in x:
        add_block_gram(scaled, sample / s, 16)
    assert torch.allclose(scale_block_gram(blocks, s), scaled)


def test_gram_clip_search_finds_the_exhaustive_optimum_over_all_tokens():
    """Same objective as AutoAWQ's clip search (per-group partial output error), over every token."""
    torch.manual_seed(1)
    x = torch.randn(300, 64)
    x[:, 3] *= 20
    w = torch.randn(16, 64)
    blocks = torch.zeros(2, 32, 32, dtype=torch.float64)
    add_block_gram(blocks, x, 32)
    thresholds = search_clip_gram(w, blocks, 4, 32)
    xg, wg = x.reshape(-1, 1, 2, 32), w.reshape(1, 16, 2, 32)
    original_max = wg.abs().amax(-1)  # [1, 16, 2]
    errors = []
    for step in range(10):
        m = (original_max * (1 - step / 20))[..., None]
        q = fake_quantize(torch.clamp(wg, -m, m).reshape(16, 64), 4, 32).reshape(wg.shape)
        errors.append((xg * (q - wg)).sum(-1).pow(2).mean(0))  # [16, 2]
    best = torch.stack(errors).argmin(0)
    assert torch.allclose(thresholds, original_max[0] * (1 - best / 20))


# --- streamed checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_llava", "tiny_qwen2_vl"])
def test_streamed_output_equals_the_whole_model_output_and_loads(fixture, request, tmp_path, monkeypatch):
    """Layer-by-layer from the shards gives the very tensors, names and config of load-whole + save_pretrained."""
    import vlq.awq.pipeline as pipeline

    model = request.getfixturevalue(fixture)
    streamed = auto_awq(_options(model, tmp_path / "streamed", search_scale=True))
    monkeypatch.setattr(pipeline, "open_streamed", lambda *args, **kwargs: None)
    whole = auto_awq(_options(model, tmp_path / "whole", search_scale=True))
    assert streamed.streamed and not whole.streamed
    a, b = checkpoint_tensors(streamed.output_dir), checkpoint_tensors(whole.output_dir)
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    config = json.loads((streamed.output_dir / "config.json").read_text())
    assert config["quantization_config"] == json.loads((whole.output_dir / "config.json").read_text())["quantization_config"]
    index = json.loads((streamed.output_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(a)
    assert not partial_dir(streamed.output_dir).exists()
    loaded = load_vlm(streamed.output_dir, device="cpu")
    assert loaded.quantized
    with torch.no_grad():
        assert torch.isfinite(loaded.model(input_ids=torch.randint(5, 500, (1, 12))).logits).all()


def test_batch_size_changes_memory_not_weights_with_uneven_chunks(tiny_qwen2_vl, tmp_path):
    one = auto_awq(_options(tiny_qwen2_vl, tmp_path / "b1", calib_samples=5, batch_size=1, search_scale=True))
    three = auto_awq(_options(tiny_qwen2_vl, tmp_path / "b3", calib_samples=5, batch_size=3, search_scale=True))
    a, b = checkpoint_tensors(one.output_dir), checkpoint_tensors(three.output_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- resume -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("ckpt") / "llama4", layers=4)


@pytest.fixture(scope="module")
def uninterrupted(four_layers, tmp_path_factory):
    return auto_awq(_options(four_layers, tmp_path_factory.mktemp("out") / "full", search_scale=True))


class _Crash(Exception):
    pass


def test_resume_after_a_failure_gives_the_uninterrupted_result(four_layers, uninterrupted, tmp_path):
    out = tmp_path / "out"

    def crash_after_layer_1(report):
        if report.index == 1:
            raise _Crash

    with pytest.raises(_Crash):
        auto_awq(_options(four_layers, out, search_scale=True), on_layer=crash_after_layer_1)
    assert not out.exists(), "a half-written output must not look complete"
    state = json.loads((partial_dir(out) / STATE_NAME).read_text())
    assert [layer["index"] for layer in state["layers"]] == [0, 1]

    seen = []
    resumed = auto_awq(_options(four_layers, out, search_scale=True, resume=True), on_layer=seen.append)
    assert resumed.resumed_layers == 2 and [r.index for r in seen] == [0, 1, 2, 3]
    assert not partial_dir(out).exists()
    a, b = checkpoint_tensors(uninterrupted.output_dir), checkpoint_tensors(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    report = json.loads((out / "vlq_report.json").read_text())
    assert report["resumed_layers"] == 2 and len(report["layers"]) == 4


def test_resume_after_sigkill_gives_the_uninterrupted_result(four_layers, uninterrupted, tmp_path):
    """A real kill -9 right after layer 2 is recorded, then `--resume` from the command line."""
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from vlq.awq.pipeline import AutoAwqOptions, auto_awq
        def kill(report):
            if report.index == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        auto_awq(AutoAwqOptions(model={str(four_layers)!r}, work_dir={str(out)!r}, calib_samples=6,
                                calib_seqlen=32, device="cpu", search_scale=True), on_layer=kill)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert not out.exists() and partial_dir(out).is_dir()

    from typer.testing import CliRunner

    from vlq.cli import app

    args = ["auto-awq", str(four_layers), "--work-dir", str(out), "--calib-samples", "6", "--calib-seqlen", "32",
            "--device", "cpu", "--search-scale", "--resume", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    a, b = checkpoint_tensors(uninterrupted.output_dir), checkpoint_tensors(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "vlq_report.json").read_text())["resumed_layers"] == 3


def test_resume_refuses_state_made_with_other_options(four_layers, tmp_path):
    out = tmp_path / "out"

    def crash(report):
        raise _Crash

    with pytest.raises(_Crash):
        auto_awq(_options(four_layers, out), on_layer=crash)
    with pytest.raises(InputError, match="calib_samples"):
        auto_awq(_options(four_layers, out, calib_samples=7, resume=True))
    fresh = auto_awq(_options(four_layers, out, calib_samples=7))  # without --resume: starts over
    assert fresh.resumed_layers == 0 and (out / "vlq_report.json").is_file()


# --- host memory ------------------------------------------------------------------------------

_RSS_SCRIPT = """
import json, resource, sys
from vlq.awq.pipeline import AutoAwqOptions, auto_awq
result = auto_awq(AutoAwqOptions(model=sys.argv[1], work_dir=sys.argv[2], calib_samples=2, calib_seqlen=16,
                                 search_scale=False, search_clip=False, device="cpu"))
print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "streamed": result.streamed}))
"""


def _big_llama(folder, layers: int, hidden: int, intermediate: int) -> int:
    """A Llama checkpoint of fp16 random weights written shard by shard (never whole in memory)."""
    from transformers import LlamaConfig

    from vlq.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                         tie_word_embeddings=False, dtype="float16")
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    pool = (torch.randn(hidden * intermediate) * 0.02).half()
    shapes = {"self_attn.q_proj.weight": (hidden, hidden), "self_attn.k_proj.weight": (hidden, hidden),
              "self_attn.v_proj.weight": (hidden, hidden), "self_attn.o_proj.weight": (hidden, hidden),
              "mlp.gate_proj.weight": (intermediate, hidden), "mlp.up_proj.weight": (intermediate, hidden),
              "mlp.down_proj.weight": (hidden, intermediate)}
    weight_map, total = {}, 0
    for i in range(layers):
        tensors = {f"model.layers.{i}.{n}": pool[: s[0] * s[1]].view(s).roll(i) for n, s in shapes.items()}
        tensors[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
        if i == 0:
            tensors["model.embed_tokens.weight"] = pool[: len(tokenizer) * hidden].view(len(tokenizer), hidden)
            tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
            tensors["model.norm.weight"] = torch.ones(hidden, dtype=torch.float16)
        name = f"model-{i + 1:05d}-of-{layers:05d}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(t.numel() * 2 for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return total


@pytest.mark.slow
def test_streaming_peak_rss_is_a_fraction_of_the_weights(tmp_path):
    """A 2 GB checkpoint quantizes in under 40% of its size in host memory (peak RSS, whole process)."""
    folder = tmp_path / "big"
    folder.mkdir()
    weight_bytes = _big_llama(folder, layers=80, hidden=1024, intermediate=2816)
    assert weight_bytes > 2e9
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    run = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(folder), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    assert measured["streamed"]
    ratio = measured["rss"] / weight_bytes
    print(f"peak RSS {measured['rss'] / 2**20:.0f} MiB for {weight_bytes / 2**20:.0f} MiB of weights: {ratio:.1%}")
    # Issue 9's bound. Measured here on 2026-11-23: 34.6% (the interpreter, torch and transformers
    # alone hold ~450 MiB of it); 38.4% for 40 layers of hidden 1536.
    assert ratio < 0.40
    loaded = ShardedCheckpoint.open(tmp_path / "out")
    assert "model.layers.79.mlp.down_proj.qweight" in loaded.entries
