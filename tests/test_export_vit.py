"""vlq export-vit: ONNX export + onnxruntime parity on tiny LLaVA / Qwen2-VL / Qwen2.5-VL, the runtime
patch (same greedy tokens), the TensorRT path up to the builder (mocked), errors, bench."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from vlq.errors import GateFailed, InputError, UsageError
from vlq.export.exporter import ExportOptions, export_vit
from vlq.export.grid import patch_layout, segment_mask, window_mask
from vlq.export.paths import Case, vision_path
from vlq.export.profile import InputRange, Profile, fixed_image_profile, grid_profile, parse_image_sizes
from vlq.export.runtime import OrtEncoder, use_exported_vit
from vlq.loading import load_vlm

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
QWEN_SIZES = "56,84,112"


# --- fixtures: one export per model, shared ---------------------------------------------------


def build_tiny_qwen2_5_vl(folder: Path) -> Path:
    """Qwen2.5-VL-shaped: window attention in block 0, full attention in block 1 (windows of 4x4 merged
    tokens: a 168px image, 6x6 merged tokens, spans four)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from vlq.tiny import QWEN_VISION_TOKENS, build_tokenizer

    tokenizer = build_tokenizer(extra_special=QWEN_VISION_TOKENS)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_VISION_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=14,
            window_size=112,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llava_export(tiny_llava, tmp_path_factory):
    out = tmp_path_factory.mktemp("vit") / "llava"
    return export_vit(ExportOptions(model=str(tiny_llava), out=str(out), max_batch=3, device="cpu"))


@pytest.fixture(scope="module")
def qwen_export(tiny_qwen2_vl, tmp_path_factory):
    out = tmp_path_factory.mktemp("vit") / "qwen"
    return export_vit(
        ExportOptions(
            model=str(tiny_qwen2_vl), out=str(out), max_batch=4, image_sizes=QWEN_SIZES, device="cpu"
        )
    )


@pytest.fixture(scope="module")
def qwen_loaded(tiny_qwen2_vl):
    return load_vlm(tiny_qwen2_vl, "cpu", "float32")


# --- pure pieces: grid arithmetic and profiles -----------------------------------------------


GRIDS = [[[1, 4, 6], [1, 8, 8]], [[2, 6, 4]], [[1, 2, 2], [3, 4, 4], [1, 10, 6]]]


@pytest.mark.parametrize("grid", GRIDS)
def test_patch_layout_matches_transformers(grid):
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

    grid = torch.tensor(grid)
    positions, segment = patch_layout(grid, int(grid.prod(-1).sum()), merge=2)
    assert torch.equal(positions, get_vision_position_ids(grid, 2))
    cu = get_vision_cu_seqlens(grid)
    expected = torch.repeat_interleave(torch.arange(len(cu) - 1), (cu[1:] - cu[:-1]).long())
    assert torch.equal(segment, expected)


@pytest.mark.parametrize("grid", [[[1, 10, 14], [1, 4, 4]], [[2, 12, 8]]])
def test_window_mask_matches_transformers_window_index(grid):
    from transformers.vision_utils import get_vision_window_index

    grid = torch.tensor(grid)
    n = int(grid.prod(-1).sum())
    positions, segment = patch_layout(grid, n, merge=2)
    window_index, cu = get_vision_window_index(grid, spatial_merge_size=2, window_size=112, patch_size=14)
    # transformers' order: merged token window_index[k] at place k; window w spans patches cu[w]:cu[w+1]
    order = (window_index[:, None] * 4 + torch.arange(4)).reshape(-1)
    window_of = torch.empty(n, dtype=torch.long)
    window_of[order] = torch.repeat_interleave(torch.arange(len(cu) - 1), (cu[1:] - cu[:-1]).long())
    expected = window_of[:, None] == window_of[None, :]
    assert torch.equal(window_mask(positions, segment, merge=2, window=4), expected)
    assert not torch.equal(expected, segment_mask(segment))  # the windows really cut attention here


def test_profiles_and_shape_checks():
    fixed = fixed_image_profile("pixel_values", (3, 336, 336), max_batch=8, opt_batch=2)
    assert fixed.inputs[0] == InputRange("pixel_values", (1, 3, 336, 336), (2, 3, 336, 336), (8, 3, 336, 336))
    fixed.check({"pixel_values": (8, 3, 336, 336)})
    with pytest.raises(
        InputError, match=r"pixel_values shape \[9, 3, 336, 336\] is outside the TensorRT profile.*max \[8"
    ):
        fixed.check({"pixel_values": (9, 3, 336, 336)})
    with pytest.raises(InputError, match="outside"):
        fixed.check({"pixel_values": (1, 3, 224, 224)})
    grid = grid_profile(1176, (256, 1024, 4096), max_batch=4, opt_batch=1, image_sizes=(224, 448, 896))
    assert grid.to_dict()["inputs"]["pixel_values"] == {
        "min": [256, 1176],
        "opt": [1024, 1176],
        "max": [16384, 1176],
    }
    assert Profile.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    with pytest.raises(InputError, match="image_grid_thw missing"):
        grid.check({"pixel_values": (300, 1176)})
    assert parse_image_sizes("224,448,896") == (224, 448, 896) and parse_image_sizes("336") == (336, 336, 336)
    for bad in ("224,100,896", "a,b,c", "1,2"):
        with pytest.raises(UsageError):
            parse_image_sizes(bad)


# --- export + onnxruntime parity ---------------------------------------------------------------


def test_llava_export_dynamic_batch(llava_export, tiny_llava):
    out, m = llava_export.out, llava_export.manifest
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "vit.onnx"]
    onnx.checker.check_model(str(out / "vit.onnx"), full_check=True)
    assert m["family"] == "llava" and m["kind"] == "llava" and m["graph"]["opset"] == 17
    assert m["io"]["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 32, 32]}]
    assert m["io"]["outputs"][0]["shape"] == ["batch", 16, 128]
    assert m["profile"]["inputs"]["pixel_values"]["max"] == [3, 3, 32, 32]
    assert m["preprocessing"]["source"] == "checkpoint" and m["preprocessing"]["settings"]["crop_size"]
    assert json.loads((out / "manifest.json").read_text()) == m
    assert [f.images for f in llava_export.parity] == [1, 2, 3]
    assert all(f.max_rel < 1e-5 for f in llava_export.parity)
    # batch 5: outside the TensorRT profile, but the ONNX graph itself takes any batch
    path = vision_path(load_vlm(tiny_llava, "cpu", "float32"))
    inputs = path.preprocess(Case.synthetic([(40 + 9 * i, 50) for i in range(5)]).images)
    out5 = OrtEncoder(out / "vit.onnx")(inputs)
    assert out5.shape == (5, 16, 128)
    torch.testing.assert_close(out5.reshape(-1, 128), path.reference(inputs), atol=1e-5, rtol=1e-4)


def test_qwen_export_dynamic_patches_and_images(qwen_export, qwen_loaded):
    m = qwen_export.manifest
    assert [i["shape"] for i in m["io"]["inputs"]] == [["patches", 1176], ["images", 3]]
    assert m["io"]["inputs"][1]["dtype"] == "int64"
    assert m["profile"]["inputs"]["pixel_values"] == {
        "min": [16, 1176],
        "opt": [36, 1176],
        "max": [256, 1176],
    }
    assert (
        "derived from vision_config" in m["preprocessing"]["source"]
    )  # the tiny checkpoint has no processor
    assert (
        all(f.max_rel < 1e-5 for f in qwen_export.parity) and max(f.images for f in qwen_export.parity) == 4
    )
    # sizes and counts never seen at export time, one of them portrait
    path = vision_path(qwen_loaded)
    inputs = path.preprocess(Case.synthetic([(70, 140), (200, 60), (56, 56), (100, 100), (84, 252)]).images)
    torch.testing.assert_close(
        OrtEncoder(qwen_export.out / "vit.onnx")(inputs), path.reference(inputs), atol=1e-5, rtol=1e-4
    )


def test_qwen2_5_window_attention_export(tmp_path):
    result = export_vit(
        ExportOptions(
            model=str(build_tiny_qwen2_5_vl(tmp_path / "q25")),
            out=str(tmp_path / "vit"),
            max_batch=2,
            image_sizes="56,112,168",
            device="cpu",
        )
    )
    assert result.manifest["architecture"] == "Qwen2_5_VLForConditionalGeneration"
    assert all(f.max_rel < 1e-5 for f in result.parity)


def test_fp16_export_with_external_data(tiny_llava, tmp_path):
    result = export_vit(
        ExportOptions(
            model=str(tiny_llava),
            out=str(tmp_path / "vit"),
            dtype="fp16",
            max_batch=2,
            device="cpu",
            external_data_bytes=0,
        )
    )
    m = result.manifest
    assert m["dtype"] == "fp16" and m["io"]["inputs"][0]["dtype"] == "float16"
    assert m["graph"]["external_data"] and "vit.onnx.data" in m["files"]
    assert "external data" in m["graph"]["simplified"]
    assert (tmp_path / "vit" / "vit.onnx.data").stat().st_size > (
        tmp_path / "vit" / "vit.onnx"
    ).stat().st_size
    assert all(f.max_rel < 2e-2 for f in result.parity)


# --- running the VLM with the exported encoder ---------------------------------------------------


def test_generate_same_tokens_with_onnxruntime_encoder(llava_export, tiny_llava, tmp_path):
    from vlq.export.parity import synthetic_image
    from vlq.generate import generate_text

    image = tmp_path / "picture.png"
    synthetic_image(300, 400, seed=7).save(image)
    loaded = load_vlm(tiny_llava, "cpu")
    reference = generate_text(loaded, "describe the picture", image, max_new_tokens=12)
    calls = []
    loaded.model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    with use_exported_vit(loaded, llava_export.out, "onnxruntime"):
        exported = generate_text(loaded, "describe the picture", image, max_new_tokens=12)
    assert exported.text == reference.text and exported.new_tokens == 12
    assert calls == []  # the PyTorch tower never ran
    assert "get_image_features" not in vars(loaded.model.model)  # restored


def test_qwen_generate_same_tokens_several_images(qwen_export, qwen_loaded):
    path, tok = vision_path(qwen_loaded), qwen_loaded.tokenizer
    pixels = path.preprocess(Case.synthetic([(90, 120), (56, 56), (112, 84)], seed=3).images)
    ids = []
    for n in (pixels["image_grid_thw"].prod(-1) // 4).tolist():
        ids += tok.convert_tokens_to_ids(["<|vision_start|>"] + ["<|image_pad|>"] * n + ["<|vision_end|>"])
    input_ids = torch.tensor([ids + tok("the company said", add_special_tokens=False)["input_ids"]])
    mm = (input_ids == tok.convert_tokens_to_ids("<|image_pad|>")).int()
    inputs = dict(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), mm_token_type_ids=mm, **pixels
    )
    reference = qwen_loaded.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    with use_exported_vit(qwen_loaded, qwen_export.out, "onnxruntime"):
        exported = qwen_loaded.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(exported, reference)


def test_exported_encoder_must_belong_to_the_model(llava_export, qwen_export, qwen_loaded, tmp_path):
    with pytest.raises(InputError, match="holds a llava encoder"):
        use_exported_vit(qwen_loaded, llava_export.out, "onnxruntime")
    from vlq.tiny import build_tiny_llava

    other = load_vlm(build_tiny_llava(tmp_path / "other", seed=1), "cpu")
    with pytest.raises(InputError, match="other vision weights"):
        use_exported_vit(other, llava_export.out, "onnxruntime")
    with pytest.raises(UsageError, match="needs --vit-dir"):
        use_exported_vit(other, None, "onnxruntime")
    with pytest.raises(UsageError, match="--vit-backend jax"):
        use_exported_vit(other, llava_export.out, "jax")
    assert use_exported_vit(other, None, "torch").owner is None


# --- errors: clear, and no partial output -------------------------------------------------------


def _no_output(out: Path) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_model_without_vision_tower(tiny_llama, tmp_path):
    out = tmp_path / "vit"
    with pytest.raises(InputError, match="family generic has no vision tower"):
        export_vit(ExportOptions(model=str(tiny_llama), out=str(out), device="cpu"))
    assert _no_output(out)


def test_unknown_family_and_unknown_vision_kind(tmp_path, tiny_llava):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(
        tmp_path / "gpt2"
    )
    out = tmp_path / "vit"
    with pytest.raises(InputError, match="unsupported architecture GPT2LMHeadModel"):
        export_vit(ExportOptions(model=str(tmp_path / "gpt2"), out=str(out), device="cpu"))
    assert _no_output(out)
    loaded = load_vlm(tiny_llava, "cpu")
    spec = dataclasses.replace(loaded.family.vision, kind="pixel_shuffle_mlp")
    loaded.family = dataclasses.replace(loaded.family, vision=spec)
    with pytest.raises(InputError, match="'pixel_shuffle_mlp', which export-vit does not implement yet"):
        vision_path(loaded)


def test_bad_options_fail_before_loading(tiny_llava, tmp_path):
    out = tmp_path / "vit"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="--out .*busy is not empty; pass --force"):
        export_vit(ExportOptions(model=str(tiny_llava), out=str(tmp_path / "busy")))
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    for options, message in (
        (dict(dtype="int8"), "--dtype int8"),
        (dict(opset=9), "--opset 9"),
        (dict(max_batch=0), "--max-batch 0"),
        (dict(opt_batch=4, max_batch=2), "--opt-batch 4"),
        (dict(image_sizes="9,8,7"), "--image-sizes"),
    ):
        with pytest.raises(UsageError, match=message):
            export_vit(ExportOptions(model=str(tiny_llava), out=str(out), **options))
    with pytest.raises(UsageError, match="fixed 32x32 crops"):
        export_vit(
            ExportOptions(model=str(tiny_llava), out=str(out), image_sizes="224,448,896", device="cpu")
        )
    assert _no_output(out)


def test_parity_gate_failure_writes_nothing(tiny_llava, tmp_path):
    out = tmp_path / "vit"
    with pytest.raises(GateFailed, match="onnxruntime vs PyTorch parity failed: case .* above the tolerance"):
        export_vit(
            ExportOptions(model=str(tiny_llava), out=str(out), max_batch=1, tolerance=1e-12, device="cpu")
        )
    assert _no_output(out)


def test_cli_errors_and_exit_codes(tiny_llava, tmp_path):
    from typer.testing import CliRunner

    from vlq.cli import app

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    runner = CliRunner()
    result = runner.invoke(app, ["export-vit", str(tiny_llava), "--out", str(tmp_path / "busy")])
    assert result.exit_code == 3 and "not empty" in result.output
    result = runner.invoke(
        app, ["export-vit", str(tiny_llava), "--out", str(tmp_path / "new"), "--dtype", "bf16"]
    )
    assert result.exit_code == 2 and "--dtype bf16" in result.output


# --- TensorRT: everything up to the builder, with TensorRT mocked --------------------------------


class FakeTrt:
    """Records what vlq asks of TensorRT's Python API (10.x names)."""

    __version__ = "10.9.0"
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    BuilderFlag = SimpleNamespace(FP16="FP16", BF16="BF16")
    MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    NetworkDefinitionCreationFlag = SimpleNamespace()
    TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

    def __init__(self, parse_ok: bool = True) -> None:
        self.calls: list[tuple] = []
        self.parse_ok = parse_ok

    def Builder(self, logger):  # noqa: N802 (TensorRT's name)
        trt, network = self, SimpleNamespace(inputs=[])
        network.get_input = lambda i: SimpleNamespace(name=network.inputs[i])

        class Config:
            def set_memory_pool_limit(self, pool, size):
                trt.calls.append(("workspace", size))

            def set_flag(self, flag):
                trt.calls.append(("flag", flag))

            def add_optimization_profile(self, profile):
                trt.calls.append(("profile",))

            def create_timing_cache(self, data):
                trt.calls.append(("timing cache in", bytes(data)))
                return "cache"

            def set_timing_cache(self, cache, ignore_mismatch):
                pass

            def get_timing_cache(self):
                return SimpleNamespace(serialize=lambda: b"CACHE")

        class Builder:
            platform_has_fast_fp16 = True

            def create_network(self, flags):
                trt.calls.append(("network flags", flags))
                return network

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return SimpleNamespace(set_shape=lambda *args: trt.calls.append(("set_shape", *args)))

            def build_serialized_network(self, net, config):
                return b"ENGINE"

        self.network = network
        return Builder()

    def OnnxParser(self, network, logger):  # noqa: N802
        def parse(path):
            network.inputs = [i.name for i in onnx.load(path, load_external_data=False).graph.input]
            network.num_inputs = len(network.inputs)
            return self.parse_ok

        return SimpleNamespace(
            parse_from_file=parse,
            num_errors=1 if not self.parse_ok else 0,
            get_error=lambda i: "Unsupported op FancyAttention",
        )


def test_build_engine_with_mocked_tensorrt(llava_export, tmp_path):
    from vlq.export.trt import build_engine

    trt = FakeTrt()
    profile = Profile.from_dict(llava_export.manifest["profile"])
    (tmp_path / "timing.cache").write_bytes(b"OLD")
    build = build_engine(
        llava_export.out / "vit.onnx",
        tmp_path / "vit.engine",
        profile,
        2.0,
        tmp_path / "timing.cache",
        trt,
        bf16=True,
    )
    assert (tmp_path / "vit.engine").read_bytes() == b"ENGINE"
    assert (tmp_path / "timing.cache").read_bytes() == b"CACHE"
    assert build.precision == ["fp32", "fp16", "bf16"] and build.to_dict()["engine"] == "vit.engine"
    assert ("set_shape", "pixel_values", (1, 3, 32, 32), (1, 3, 32, 32), (3, 3, 32, 32)) in trt.calls
    assert ("workspace", 2 << 30) in trt.calls and ("timing cache in", b"OLD") in trt.calls
    assert ("network flags", 0) in trt.calls and ("flag", "FP16") in trt.calls
    with pytest.raises(InputError, match="TensorRT could not parse .*Unsupported op FancyAttention"):
        build_engine(
            llava_export.out / "vit.onnx", tmp_path / "x.engine", profile, 1.0, tmp_path / "c", FakeTrt(False)
        )
    assert not (tmp_path / "x.engine").exists()


def test_trt_runner_checks_the_profile_before_tensorrt(qwen_export):
    from vlq.export.trt import TrtEncoder

    calls = []
    engine = SimpleNamespace(
        num_io_tensors=3,
        get_tensor_name=["pixel_values", "image_grid_thw", "image_embeds"].__getitem__,
        get_tensor_mode=lambda n: "OUTPUT" if n == "image_embeds" else "INPUT",
        get_tensor_dtype=lambda n: n,
        create_execution_context=lambda: SimpleNamespace(set_input_shape=lambda *a: calls.append(a)),
    )
    trt = SimpleNamespace(
        **{k: getattr(FakeTrt, k) for k in ("Logger", "TensorIOMode")},
        Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda data: engine),
        nptype=lambda dtype: np.int64 if dtype == "image_grid_thw" else np.float32,
    )
    (qwen_export.out / "fake.engine").write_bytes(b"x")
    runner = TrtEncoder(
        qwen_export.out / "fake.engine", Profile.from_dict(qwen_export.manifest["profile"]), trt
    )
    assert (
        runner.inputs == ["pixel_values", "image_grid_thw"] and runner.dtypes["image_grid_thw"] == torch.int64
    )
    too_many = {"pixel_values": torch.zeros(80, 1176), "image_grid_thw": torch.tensor([[1, 4, 4]] * 5)}
    with pytest.raises(InputError, match=r"image_grid_thw shape \[5, 3\] is outside the TensorRT profile"):
        runner(too_many)
    too_big = {"pixel_values": torch.zeros(1024, 1176), "image_grid_thw": torch.tensor([[1, 32, 32]])}
    with pytest.raises(InputError, match=r"pixel_values shape \[1024, 1176\] is outside .*max \[256, 1176\]"):
        runner(too_big)
    assert calls == []  # TensorRT never saw the bad shapes
    (qwen_export.out / "fake.engine").unlink()


def test_missing_export_packages_name_the_extra_and_write_nothing(tiny_llava, tmp_path, monkeypatch):
    """A plain `pip install vlq` has no onnx/onnxscript: one clear line, not an internal error."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real_find_spec(name, *a)
    )
    out = tmp_path / "vit"
    with pytest.raises(InputError, match=r"^vlq export-vit needs onnxscript: pip install 'vlq\[export\]'$"):
        export_vit(ExportOptions(model=str(tiny_llava), out=str(out), max_batch=1, device="cpu"))
    assert not out.exists()


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed: the missing-TensorRT message cannot be shown")
def test_trt_missing_leaves_a_complete_onnx_export(tiny_llava, tmp_path):
    out = tmp_path / "vit"
    with pytest.raises(
        InputError, match=r"TensorRT is not installed: pip install 'vlq\[trt\]'.*ONNX export is complete"
    ):
        export_vit(ExportOptions(model=str(tiny_llava), out=str(out), max_batch=1, trt=True, device="cpu"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tensorrt"] is None and (out / "vit.onnx").is_file()


@pytest.mark.skipif(
    not (HAS_TRT and torch.cuda.is_available()), reason="needs tensorrt and a CUDA GPU (neither here)"
)
def test_trt_engine_real(tiny_llava, tmp_path):
    result = export_vit(
        ExportOptions(model=str(tiny_llava), out=str(tmp_path / "vit"), max_batch=2, trt=True)
    )
    assert (tmp_path / "vit" / "vit.engine").is_file() and result.trt_parity
    assert all(f.max_rel < 2e-2 for f in result.trt_parity)


# --- bench ------------------------------------------------------------------------------------------


def test_bench_side_by_side(llava_export, tiny_llava):
    from vlq.export.bench import bench_vit

    result = bench_vit(
        str(tiny_llava), str(llava_export.out), batch_sizes=(1, 2), warmup=0, iters=2, device="cpu"
    )
    rows = {(r.backend, r.batch): r for r in result.rows}
    assert set(rows) == {(b, n) for b in ("torch", "onnxruntime", "tensorrt") for n in (1, 2)}
    for backend in ("torch", "onnxruntime"):
        assert (
            rows[backend, 2].status == "ok"
            and rows[backend, 2].median_ms > 0
            and rows[backend, 2].images_per_s > 0
        )
    if not HAS_TRT:
        assert rows["tensorrt", 1].status.startswith("skipped: tensorrt not installed")
