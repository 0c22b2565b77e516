"""vlq export-vit beyond LLaVA / Qwen2-VL: every other family with a vision tower, on tiny models.

Per family: ONNX export with a dynamic batch (or patch) axis, onnx.checker, onnxruntime parity
against the model's own PyTorch image-features code at two batch sizes (and a third batch the
export never saw), manifest.json written. Where the family's code has an image-features method,
the VLM runs with the exported encoder: same greedy tokens (or the same embeddings where the
fixture has no image-generation entry point). Clear errors where a family cannot be exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from vlq.errors import InputError, UsageError
from vlq.export.exporter import ExportOptions, export_vit
from vlq.export.parity import synthetic_image
from vlq.export.paths import Case, vision_path
from vlq.export.runtime import OrtEncoder, use_exported_vit
from vlq.fixtures import make_tiny_checkpoint
from vlq.loading import load_vlm
from vlq.tiny import IMAGE_TOKEN, build_tokenizer

TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)


def build_internvl(folder: Path) -> Path:
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    tok = build_tokenizer()
    config = InternVLConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tok), **TEXT),
        vision_config=dict(**VISION, image_size=[32, 32], patch_size=[8, 8]),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    torch.manual_seed(0)
    InternVLForConditionalGeneration(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_deepseek_vl(folder: Path, hybrid: bool = False) -> Path:
    from transformers import DeepseekVLConfig, DeepseekVLForConditionalGeneration

    tok = build_tokenizer()
    config = DeepseekVLConfig(
        text_config=dict(vocab_size=len(tok), **TEXT),
        vision_config=dict(**VISION, image_size=32, patch_size=8),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    torch.manual_seed(0)
    DeepseekVLForConditionalGeneration(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


#: test name -> (builder, vlq family, vision path kind, output shape per image)
FAMILIES = {
    "internvl": (build_internvl, "internvl", "features", [4, 64]),
    "deepseek_vl": (build_deepseek_vl, "deepseek_vl", "features", [16, 64]),
    "internvl_chat": ("internvl_chat", "internvl_chat", "features", [4, 128]),
    "internlm_xcomposer2": ("internlm_xcomposer2", "internlm_xcomposer2", "features", [16, 128]),
    "qwen_vl": ("qwen_vl", "qwen_vl", "features", [256, 128]),
    "deepseek_vl_remote": ("deepseek_vl", "deepseek_vl_remote", "features", [16, 128]),
    "mini_gemini": ("mini_gemini", "mini_gemini", "mini_gemini", [16, 128]),
    "bagel": ("bagel", "bagel", "navit", None),
}


class Exports:
    """Checkpoints, loaded models and exports, built once per module and only when a test asks."""

    def __init__(self, root: Path) -> None:
        self.root, self.done = root, {}

    def __call__(self, name: str):
        if name not in self.done:
            builder = FAMILIES[name][0]
            folder = self.root / name
            folder = builder(folder) if callable(builder) else make_tiny_checkpoint(builder, folder)
            loaded = load_vlm(folder, "cpu", "float32")
            options = ExportOptions(model=str(folder), out=str(self.root / f"{name}-vit"), max_batch=2, device="cpu")
            if name == "bagel":
                options.image_sizes = "8,16,32"
            self.done[name] = (loaded, export_vit(options, loaded=loaded))
        return self.done[name]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return Exports(tmp_path_factory.mktemp("families"))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_exports_with_dynamic_batch_and_parity(name, exports):
    loaded, result = exports(name)
    _, family, kind, per_image = FAMILIES[name]
    out, m = result.out, result.manifest
    onnx.checker.check_model(str(out / "vit.onnx"), full_check=True)
    assert json.loads((out / "manifest.json").read_text()) == m
    assert m["family"] == family and m["kind"] == kind and m["tensorrt"] is None
    assert m["fingerprint"]["tensors"] > 0 and m["preprocessing"]["source"]
    figures = m["parity"]["onnxruntime"]
    assert all(f["max_rel"] < 1e-5 for f in figures)
    path = vision_path(loaded)
    if per_image is not None:  # fixed crops: the batch axis is symbolic in every input and the output
        assert {f["images"] for f in figures} == {1, 2}
        assert all(i["shape"][0] == "batch" for i in m["io"]["inputs"])
        assert m["io"]["outputs"][0]["shape"] == ["batch", *per_image]
        images = Case.synthetic([(40 + 9 * i, 50) for i in range(3)]).images  # batch 3: never exported
    else:  # packed patches of any size: patches and images both symbolic
        assert [i["shape"][0] for i in m["io"]["inputs"]] == ["patches", "images"]
        assert len({f["images"] for f in figures}) >= 2 and max(f["images"] for f in figures) == 2
        images = Case.synthetic([(8, 32), (24, 16), (32, 32)]).images
    inputs = path.preprocess(images)
    exported = OrtEncoder(out / "vit.onnx")(inputs)
    reference = path.reference(inputs)
    torch.testing.assert_close(exported.reshape(reference.shape), reference, atol=1e-5, rtol=1e-4)


# --- running the VLM with the exported encoder ----------------------------------------------------------


def _text(loaded, text: str) -> list[int]:
    return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]


def _same_greedy(loaded, folder, generate) -> None:
    """Same greedy tokens with the exported encoder, and the PyTorch projector never ran for them."""
    calls: list = []
    hook = vision_path(loaded).projector.register_forward_hook(lambda *args: calls.append(1))
    reference = generate()
    ran = len(calls)
    with use_exported_vit(loaded, folder, "onnxruntime") as patch:
        exported = generate()
    hook.remove()
    assert ran >= 1 and len(calls) == ran
    assert patch.owner is None  # restored
    assert torch.equal(exported, reference)


@pytest.mark.parametrize("name", ["internvl", "deepseek_vl"])
def test_native_generate_same_tokens(name, exports):
    loaded, result = exports(name)
    path = vision_path(loaded)
    pixels = path.preprocess([synthetic_image(60, 80, seed=4), synthetic_image(50, 50, seed=5)])["pixel_values"]
    tokens = FAMILIES[name][3][0]
    image = loaded.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    ids = torch.tensor([[image] * (2 * tokens) + _text(loaded, "the two pictures show")])

    def generate():
        return loaded.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, max_new_tokens=6, do_sample=False
        )

    _same_greedy(loaded, result.out, generate)


def test_internvl_chat_generate_same_tokens(exports):
    loaded, result = exports("internvl_chat")
    model = loaded.model
    model.img_context_token_id = loaded.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    pixels = vision_path(loaded).preprocess([synthetic_image(70, 90, seed=6)])["pixel_values"]
    ids = torch.tensor([[model.img_context_token_id] * 4 + _text(loaded, "describe it")])
    _same_greedy(
        loaded,
        result.out,
        lambda: model.generate(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids),
                               max_new_tokens=6, do_sample=False),
    )


def test_qwen_vl_generate_same_tokens(exports, tmp_path):
    """Qwen-VL reads image paths from the token ids between <img> and </img> and calls `visual`."""
    loaded, result = exports("qwen_vl")
    picture = tmp_path / "p.png"
    synthetic_image(40, 60, seed=8).save(picture)
    tok = loaded.tokenizer
    start, end, pad = (tok.convert_tokens_to_ids(t) for t in ("<img>", "</img>", "<imgpad>"))
    path_ids = list(str(picture).encode())
    ids = torch.tensor([[start, *path_ids, *[pad] * (256 - len(path_ids)), end, *_text(loaded, "what is it")]])
    _same_greedy(
        loaded,
        result.out,
        lambda: loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                      do_sample=False),
    )


def test_mini_gemini_generate_same_tokens(exports):
    loaded, result = exports("mini_gemini")
    inputs = vision_path(loaded).preprocess([synthetic_image(80, 60, seed=9)])
    ids = torch.tensor([[*_text(loaded, "look"), -200, *_text(loaded, "and tell")]])
    _same_greedy(
        loaded,
        result.out,
        lambda: loaded.model.generate(ids, images=inputs["images"], images_aux=inputs["images_aux"],
                                      attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False),
    )


@pytest.mark.parametrize("name", ["internlm_xcomposer2", "bagel"])
def test_embedding_methods_use_the_export(name, exports):
    """XComposer2 (`encode_img`) and BAGEL (`embed_vit_tokens`) embed images for a caller that
    builds `inputs_embeds`: the patched method gives the export's embeddings, and greedy decoding
    from them matches."""
    from transformers import GenerationConfig

    loaded, result = exports(name)
    model, path = loaded.model, vision_path(loaded)
    if name == "bagel":
        images = [path.image_processor(synthetic_image(h, w, seed=h)) for h, w in ((32, 16), (24, 24))]
        embed_images, embed_text = (lambda: model.embed_vit_tokens(images)), model.get_input_embeddings()
        lm = model.language_model
    else:
        pixels = path.preprocess([synthetic_image(50, 70, seed=2)])["pixel_values"]
        embed_images, embed_text = (lambda: model.encode_img(pixels).reshape(-1, 128)), model.get_input_embeddings()
        lm = model
    ids = torch.tensor(_text(loaded, "the picture above"))

    def generate():
        with torch.no_grad():
            embeds = torch.cat([embed_images(), embed_text(ids)])[None]
        # An explicit generation config: XComposer2's config.json carries upstream's max_length key
        config = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id,
                                  eos_token_id=loaded.tokenizer.eos_token_id)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        return lm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)

    reference_embeds = embed_images()
    with use_exported_vit(loaded, result.out, "onnxruntime"):
        exported_embeds = embed_images()
    torch.testing.assert_close(exported_embeds, reference_embeds, atol=1e-5, rtol=1e-4)
    _same_greedy(loaded, result.out, generate)


# --- what cannot be exported or plugged in: clear errors ----------------------------------------------


def test_deepseek_remote_exports_but_cannot_be_plugged_in(exports):
    loaded, result = exports("deepseek_vl_remote")
    assert result.manifest["vision"]["features"] == ""
    with pytest.raises(UsageError, match="family deepseek_vl_remote has no image-features method to replace"):
        use_exported_vit(loaded, result.out, "onnxruntime")


def test_deepseek_vl_hybrid_is_refused_by_name(tmp_path):
    from transformers import DeepseekVLHybridConfig, DeepseekVLHybridForConditionalGeneration

    tok = build_tokenizer()
    config = DeepseekVLHybridConfig(
        text_config=dict(vocab_size=len(tok), **TEXT),
        vision_config=dict(**VISION, image_size=32, patch_size=8),
        high_res_vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=64,
                                    patch_size=16, output_channels=32, global_attn_indexes=[0], mlp_dim=64),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    DeepseekVLHybridForConditionalGeneration(config).save_pretrained(tmp_path / "hybrid")
    tok.save_pretrained(tmp_path / "hybrid")
    out = tmp_path / "vit"
    with pytest.raises(InputError, match=r"get_image_features also needs high_res_pixel_values.*deepseek_vl vision spec"):
        export_vit(ExportOptions(model=str(tmp_path / "hybrid"), out=str(out), device="cpu"))
    assert not out.exists()


def test_fixed_crop_families_refuse_image_sizes(exports, tmp_path):
    loaded, _ = exports("internvl_chat")
    with pytest.raises(UsageError, match="internvl_chat encodes fixed-size crops .*pixel_values 32x32"):
        export_vit(ExportOptions(model="unused", out=str(tmp_path / "v"), image_sizes="16,32,64"), loaded=loaded)
    loaded, _ = exports("bagel")
    with pytest.raises(UsageError, match="position table covers 4 patches of 8 px, images up to 32 px"):
        export_vit(ExportOptions(model="unused", out=str(tmp_path / "v"), image_sizes="8,16,64"), loaded=loaded)
    assert not (tmp_path / "v").exists()
