"""Tiny remote-code fixtures: they load like hub checkpoints and compute like the upstream models."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from vlq.errors import UsageError
from vlq.fixtures import FIXTURE_FAMILIES, fixture_spec, make_tiny_checkpoint

#: Where each family's decoder layers are, and which module runs text only (upstream InternVL and
#: DeepSeek-VL top models need images / have no forward).
LAYERS = {
    "internvl_chat": "language_model.model.layers",
    "internlm_xcomposer2": "model.layers",
    "qwen_vl": "transformer.h",
    "deepseek_vl": "language_model.model.layers",
    "mini_gemini": "model.layers",
    "bagel": "language_model.model.layers",
}
TEXT_MODEL = {"internvl_chat": "language_model", "deepseek_vl": "language_model"}

#: Parameter names the adapters rely on, one per kind of part.
EXPECTED_PARAMETERS = {
    "internvl_chat": (
        "language_model.model.tok_embeddings.weight",
        "language_model.model.layers.1.attention.wqkv.weight",
        "language_model.model.layers.1.attention.wo.weight",
        "language_model.model.layers.1.feed_forward.w1.weight",
        "language_model.model.layers.1.feed_forward.w3.weight",
        "language_model.model.layers.1.feed_forward.w2.weight",
        "language_model.model.layers.1.attention_norm.weight",
        "language_model.model.layers.1.ffn_norm.weight",
        "language_model.model.norm.weight",
        "language_model.output.weight",
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.encoder.layers.0.attn.qkv.weight",
        "mlp1.0.weight",
        "mlp1.1.weight",
        "mlp1.3.weight",
    ),
    "internlm_xcomposer2": (
        "model.layers.0.attention.wqkv.weight",
        "model.layers.0.attention.wqkv.Plora_A.weight",
        "model.layers.0.attention.wqkv.Plora_B.weight",
        "model.layers.0.attention.wo.Plora_A.weight",
        "model.layers.0.feed_forward.w1.Plora_A.weight",
        "model.layers.0.feed_forward.w2.Plora_B.weight",
        "model.layers.0.feed_forward.w3.weight",
        "output.weight",
        "vit.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
        "vision_proj.0.weight",
        "vision_proj.2.weight",
    ),
    "qwen_vl": (
        "transformer.wte.weight",
        "transformer.h.1.ln_1.weight",
        "transformer.h.1.attn.c_attn.weight",
        "transformer.h.1.attn.c_attn.bias",
        "transformer.h.1.attn.c_proj.weight",
        "transformer.h.1.ln_2.weight",
        "transformer.h.1.mlp.w1.weight",
        "transformer.h.1.mlp.w2.weight",
        "transformer.h.1.mlp.c_proj.weight",
        "transformer.ln_f.weight",
        "lm_head.weight",
        "transformer.visual.conv1.weight",
        "transformer.visual.transformer.resblocks.0.attn.in_proj.weight",
        "transformer.visual.attn_pool.query",
        "transformer.visual.attn_pool.kv_proj.weight",
        "transformer.visual.proj",
    ),
    "deepseek_vl": (
        "language_model.model.layers.1.self_attn.q_proj.weight",
        "language_model.model.layers.1.mlp.down_proj.weight",
        "language_model.lm_head.weight",
        "vision_model.vision_tower.blocks.0.attn.qkv.weight",
        "aligner.layers.0.weight",
        "aligner.layers.2.weight",
    ),
    "mini_gemini": (
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "lm_head.weight",
        "model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
        "model.vision_tower_aux.vision_stem.0.weight",
        "model.mm_projector.0.weight",
        "model.mm_projector.2.weight",
        "model.vlm_uni_query_projector.1.weight",
        "model.vlm_uni_aux_projector.1.weight",
        "model.vlm_uni_val_projector.1.weight",
    ),
    "bagel": (
        "language_model.model.layers.1.input_layernorm.weight",
        "language_model.model.layers.1.input_layernorm_moe_gen.weight",
        "language_model.model.layers.1.self_attn.q_proj.weight",
        "language_model.model.layers.1.self_attn.q_proj_moe_gen.weight",
        "language_model.model.layers.1.self_attn.k_norm_moe_gen.weight",
        "language_model.model.layers.1.self_attn.o_proj_moe_gen.weight",
        "language_model.model.layers.1.mlp.gate_proj.weight",
        "language_model.model.layers.1.mlp_moe_gen.down_proj.weight",
        "language_model.model.layers.1.post_attention_layernorm_moe_gen.weight",
        "language_model.model.norm_moe_gen.weight",
        "language_model.lm_head.weight",
        "vit_model.vision_model.embeddings.patch_embedding.weight",
        "connector.fc1.weight",
        "vae2llm.weight",
        "llm2vae.weight",
        "latent_pos_embed.pos_embed",
        "vit_pos_embed.pos_embed",
        "time_embedder.mlp.0.weight",
    ),
}

#: Keyword arguments each decoder layer receives (hidden states come first, positionally).
LAYER_KWARGS = {
    "internvl_chat": {"attention_mask", "position_ids", "past_key_value", "output_attentions", "use_cache"},
    "internlm_xcomposer2": {
        "attention_mask",
        "position_ids",
        "past_key_value",
        "output_attentions",
        "use_cache",
        "im_mask",
    },
    "qwen_vl": {
        "layer_past",
        "rotary_pos_emb",
        "registered_causal_mask",
        "attention_mask",
        "head_mask",
        "encoder_hidden_states",
        "encoder_attention_mask",
        "use_cache",
        "output_attentions",
    },
    "deepseek_vl": {"attention_mask", "position_embeddings", "position_ids", "past_key_values", "use_cache"},
    "mini_gemini": {"attention_mask", "position_embeddings", "position_ids", "past_key_values", "use_cache"},
    "bagel": {
        "attention_mask",
        "position_ids",
        "past_key_value",
        "use_cache",
        "position_embeddings",
        "mode",
        "vae_token_mask",
    },
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    return {family: make_tiny_checkpoint(family, root / family) for family in FIXTURE_FAMILIES}


def load(folder, family, **kwargs):
    auto = AutoModel if fixture_spec(family).auto_class == "AutoModel" else AutoModelForCausalLM
    return auto.from_pretrained(folder, trust_remote_code=True, **kwargs).eval()


@pytest.fixture(scope="module")
def models(checkpoints):
    return {family: load(folder, family) for family, folder in checkpoints.items()}


def text_model(model, family):
    return model.get_submodule(TEXT_MODEL.get(family, ""))


def text_ids(folder, text="the quick brown fox jumps over the lazy dog"):
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=True)(text, return_tensors="pt").input_ids


def test_families_are_the_six_remote_code_ones():
    assert set(FIXTURE_FAMILIES) == set(LAYERS)
    with pytest.raises(UsageError, match="unknown fixture family"):
        fixture_spec("llava")


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_checkpoint_folder_is_hub_like(checkpoints, family):
    folder = checkpoints[family]
    spec = fixture_spec(family)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [spec.architecture]
    assert config["auto_map"] == spec.auto_map
    for module in {ref.split(".")[0] for ref in spec.auto_map.values()}:
        assert (folder / f"{module}.py").is_file()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_loads_with_upstream_names_and_decoder_layout(models, family):
    model = models[family]
    assert type(model).__name__ == fixture_spec(family).architecture
    names = {name for name, _ in model.named_parameters()}
    missing = [name for name in EXPECTED_PARAMETERS[family] if name not in names]
    assert not missing
    layers = model.get_submodule(LAYERS[family])
    assert isinstance(layers, nn.ModuleList) and len(layers) == 2
    # Every decoder linear AWQ may quantize has in_features divisible by the group size 128.
    for name, linear in layers.named_modules():
        if isinstance(linear, nn.Linear) and "Plora_" not in name:
            assert linear.in_features % 128 == 0, name


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_text_forward_gives_finite_logits(checkpoints, models, family):
    ids = text_ids(checkpoints[family])
    with torch.no_grad():
        logits = text_model(models[family], family)(input_ids=ids, use_cache=False).logits
    vocab = text_model(models[family], family).get_output_embeddings().out_features
    assert logits.shape == (1, ids.shape[1], vocab)
    assert torch.isfinite(logits).all() and logits.std() > 0


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_reload_is_bit_identical_to_the_saved_weights(checkpoints, models, family):
    saved = load_file(checkpoints[family] / "model.safetensors")
    again = load(checkpoints[family], family).state_dict()
    first = models[family].state_dict()
    assert set(saved) <= set(first)
    assert all(torch.equal(saved[k], first[k]) and torch.equal(first[k], again[k]) for k in saved)


@pytest.mark.parametrize("family", [f for f in FIXTURE_FAMILIES if f != "internlm_xcomposer2"])
def test_save_pretrained_round_trip_keeps_weights(models, family, tmp_path):
    models[family].save_pretrained(tmp_path)
    reloaded = load(tmp_path, family).state_dict()
    assert all(torch.equal(v, reloaded[k]) for k, v in models[family].state_dict().items())


def test_xcomposer2_config_holds_max_length_as_upstream(models, tmp_path):
    """Upstream's config.json carries `max_length`; transformers 5 refuses to save or generate from it."""
    model = models["internlm_xcomposer2"]
    assert model.config.max_length == 4096
    with pytest.raises(ValueError, match="max_length"):
        model.config.save_pretrained(tmp_path)


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_decoder_layers_are_called_positionally_and_replay_exactly(checkpoints, models, family):
    """What vlq's calibration relies on: record layer 0's call, call it again, same output."""
    layer, args, kwargs, expected = _layer0_call(family, models[family], checkpoints[family])
    assert len(args) == 1 and args[0].dim() == 3 and args[0].shape[-1] == 128
    assert LAYER_KWARGS[family] <= set(kwargs)
    with torch.no_grad():
        again = layer(*args, **kwargs)
    assert torch.equal(expected, again[0] if isinstance(again, tuple) else again)


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_generate_with_cache_matches_greedy_without(checkpoints, models, family):
    model = text_model(models[family], family)
    ids = text_ids(checkpoints[family])
    config = GenerationConfig(max_new_tokens=3, do_sample=False)
    # (Mini-Gemini generates from embeddings, so its output holds the new tokens only)
    generated = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)[:, -3:]
    greedy = ids
    with torch.no_grad():
        for _ in range(3):
            step = model(input_ids=greedy, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            greedy = torch.cat([greedy, step], dim=1)
    assert torch.equal(generated, greedy[:, ids.shape[1] :])


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_float16_forward_is_finite(checkpoints, family):
    model = load(checkpoints[family], family, dtype=torch.float16)
    with torch.no_grad():
        logits = text_model(model, family)(input_ids=text_ids(checkpoints[family]), use_cache=False).logits
    assert torch.isfinite(logits).all()


def _image_logits(family, model, folder, tmp_path):
    """Logits of a prompt with one image, built the way each upstream family does it."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    ids = text_ids(folder)[0].tolist()
    pixels = torch.randn(1, 3, 32, 32)
    if family == "internvl_chat":
        model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        image = tokenizer.convert_tokens_to_ids(
            ["<img>"] + ["<IMG_CONTEXT>"] * model.num_image_token + ["</img>"]
        )
        return model(
            pixel_values=pixels, input_ids=torch.tensor([image + ids]), image_flags=torch.ones(1, 1)
        ).logits
    if family == "internlm_xcomposer2":
        embeds = torch.cat(
            [model.encode_img(pixels), model.get_input_embeddings()(torch.tensor([ids]))], dim=1
        )
        im_mask = torch.zeros(embeds.shape[:2], dtype=torch.bool)
        im_mask[:, : embeds.shape[1] - len(ids)] = True
        return model(inputs_embeds=embeds, im_mask=im_mask).logits
    if family == "qwen_vl":
        from PIL import Image

        path = tmp_path / "red.png"
        Image.new("RGB", (40, 30), (200, 10, 50)).save(path)
        start = model.config.visual["image_start_id"]
        path_ids = list(str(path).encode())
        span = [start, *path_ids, *[start + 2] * (256 - len(path_ids)), start + 1]
        return model(input_ids=torch.tensor([span + ids])).logits
    if family == "deepseek_vl":
        placeholder = tokenizer.convert_tokens_to_ids("<image_placeholder>")
        input_ids = torch.tensor([[placeholder] * 16 + ids])
        embeds = model.prepare_inputs_embeds(
            input_ids, pixels[None], input_ids == placeholder, torch.ones(1, 1, 16, dtype=torch.bool)
        )
        return model.language_model(inputs_embeds=embeds).logits
    if family == "mini_gemini":
        return model(
            input_ids=torch.tensor([[-200] + ids]), images=pixels, images_aux=torch.randn(1, 3, 64, 64)
        ).logits
    vit = model.embed_vit_tokens([pixels[0]])
    embeds = torch.cat([vit[None], model.get_input_embeddings()(torch.tensor([ids]))], dim=1)
    return model(inputs_embeds=embeds).logits


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_image_prompt_gives_finite_logits_that_depend_on_the_image(checkpoints, models, family, tmp_path):
    with torch.no_grad():
        logits = _image_logits(family, models[family], checkpoints[family], tmp_path)
        text = text_model(models[family], family)(
            input_ids=text_ids(checkpoints[family]), use_cache=False
        ).logits
    assert torch.isfinite(logits).all()
    assert logits.shape[1] > text.shape[1]
    # The text after the image sees it: its logits differ from the text-only run.
    assert not torch.allclose(logits[:, -1], text[:, -1], atol=1e-4)


def test_plora_branch_runs_on_image_tokens_only(checkpoints, models):
    model = models["internlm_xcomposer2"]
    embeds = model.get_input_embeddings()(text_ids(checkpoints["internlm_xcomposer2"]))
    no_image = torch.zeros(embeds.shape[:2], dtype=torch.bool)
    first_is_image = no_image.clone()
    first_is_image[:, 0] = True
    with torch.no_grad():
        plain = model(inputs_embeds=embeds).logits
        masked_none = model(inputs_embeds=embeds, im_mask=no_image).logits
        masked_first = model(inputs_embeds=embeds, im_mask=first_is_image).logits
    assert torch.equal(plain, masked_none)
    assert not torch.allclose(plain, masked_first)


def test_bagel_understanding_never_reads_generation_weights(checkpoints, models):
    model = models["bagel"]
    ids = text_ids(checkpoints["bagel"])
    with torch.no_grad():
        before = model(input_ids=ids, use_cache=False).logits
        latents = model.embed_latents(torch.randn(4, 64), torch.rand(4), torch.arange(4))
        embeds = torch.cat([model.get_input_embeddings()(ids), latents[None]], dim=1)
        vae = torch.zeros(embeds.shape[:2], dtype=torch.bool)
        vae[:, -4:] = True
        gen = model.language_model.model(
            inputs_embeds=embeds, mode="gen", vae_token_mask=vae, use_cache=False
        )
        und = model.language_model.model(inputs_embeds=embeds, use_cache=False)
        saved = {n: p.clone() for n, p in model.named_parameters() if "moe_gen" in n}
        for name in saved:
            model.get_parameter(name).zero_()
        after = model(input_ids=ids, use_cache=False).logits
        for name, value in saved.items():
            model.get_parameter(name).copy_(value)
    assert torch.equal(before, after)
    assert torch.equal(gen.last_hidden_state[:, :-4], und.last_hidden_state[:, :-4])
    assert not torch.allclose(gen.last_hidden_state[:, -4:], und.last_hidden_state[:, -4:])
    assert model.llm2vae(gen.last_hidden_state[vae]).shape == (4, 64)


LLAMA_GROUPS = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    ("mlp.up_proj", ("mlp.down_proj",)),
)
INTERNLM2_GROUPS = (
    ("attention_norm", ("attention.wqkv",)),
    ("ffn_norm", ("feed_forward.w1", "feed_forward.w3")),
    ("feed_forward.w3", ("feed_forward.w2",)),
)
#: AWQ scale groups, relative to a decoder layer: (op whose output feeds the linears, linears).
#: "c_attn[v]" is the value slice (last third of the rows) of Qwen's fused c_attn.
SCALE_GROUPS = {
    "internvl_chat": INTERNLM2_GROUPS,
    "internlm_xcomposer2": INTERNLM2_GROUPS,
    "qwen_vl": (
        ("ln_1", ("attn.c_attn",)),
        ("attn.c_attn[v]", ("attn.c_proj",)),
        ("ln_2", ("mlp.w1", "mlp.w2")),
        ("mlp.w1", ("mlp.c_proj",)),
    ),
    "deepseek_vl": LLAMA_GROUPS,
    "mini_gemini": LLAMA_GROUPS,
    "bagel": LLAMA_GROUPS
    + (
        (
            "input_layernorm_moe_gen",
            ("self_attn.q_proj_moe_gen", "self_attn.k_proj_moe_gen", "self_attn.v_proj_moe_gen"),
        ),
        ("post_attention_layernorm_moe_gen", ("mlp_moe_gen.gate_proj", "mlp_moe_gen.up_proj")),
        ("mlp_moe_gen.up_proj", ("mlp_moe_gen.down_proj",)),
    ),
}


@torch.no_grad()
def _fold(layer: nn.Module, prev_name: str, linear_names: tuple[str, ...], s: torch.Tensor) -> None:
    """Reference AWQ folding: the op feeding the group outputs x / s, the linears read columns * s.

    A PLoRA linear also scales its `Plora_A` columns (it reads the same input) and, when it is the
    op feeding the group, its `Plora_B` rows (they add to the same output on image tokens).
    """
    if prev_name.endswith("[v]"):
        prev = layer.get_submodule(prev_name[:-3])
        prev.weight[-len(s) :] /= s[:, None]
        prev.bias[-len(s) :] /= s
    else:
        prev = layer.get_submodule(prev_name)
        prev.weight.div_(s[:, None] if prev.weight.dim() == 2 else s)
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s)
        if hasattr(prev, "Plora_B"):
            prev.Plora_B.weight.div_(s[:, None])
    for name in linear_names:
        linear = layer.get_submodule(name)
        linear.weight.mul_(s[None])
        if hasattr(linear, "Plora_A"):
            linear.Plora_A.weight.mul_(s[None])


def _layer0_call(family, model, folder):
    """Layer 0's (args, kwargs, output) on a prompt that exercises image / generation paths too."""
    layer = model.get_submodule(LAYERS[family])[0]
    calls = []
    handle = layer.register_forward_hook(lambda m, a, k, out: calls.append((a, k, out)), with_kwargs=True)
    ids = text_ids(folder)
    try:
        if family == "internlm_xcomposer2":
            embeds = model.get_input_embeddings()(ids)
            im_mask = torch.zeros(ids.shape, dtype=torch.bool)
            im_mask[:, :4] = True
            model(inputs_embeds=embeds, im_mask=im_mask, use_cache=False)
        elif family == "bagel":
            vae = torch.zeros(ids.shape, dtype=torch.bool)
            vae[:, -4:] = True
            model(input_ids=ids, mode="gen", vae_token_mask=vae, use_cache=False)
        else:
            text_model(model, family)(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    ((args, kwargs, out),) = calls
    return layer, args, kwargs, out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_scale_groups_fold_exactly(checkpoints, models, family):
    """The reported AWQ scale groups are exact: folding any positive scales keeps the layer's output."""
    import copy

    with torch.no_grad():
        layer, args, kwargs, expected = _layer0_call(family, models[family], checkpoints[family])
        folded = copy.deepcopy(layer)
        generator = torch.Generator().manual_seed(0)
        for prev, linears in SCALE_GROUPS[family]:
            width = folded.get_submodule(linears[0]).in_features
            _fold(folded, prev, linears, torch.rand(width, generator=generator) * 1.5 + 0.5)
        out = folded(*args, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    assert not torch.equal(out, expected)  # the weights did change
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
