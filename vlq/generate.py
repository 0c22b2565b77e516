"""`vlq generate`: greedy generation from a 16-bit or 4-bit folder, optionally with an image."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vlq.errors import InputError, UsageError
from vlq.loading import LoadedVlm, load_vlm


@dataclass
class GenerateResult:
    text: str
    new_tokens: int
    seconds: float
    quantized: bool
    kv_bits: int

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("inf")


def make_cache(kv_bits: int, model):
    """None (transformers' default cache) for 16 bit, else vlq's quantized KV cache."""
    if kv_bits == 16:
        return None
    if kv_bits not in (8, 4):
        raise UsageError(f"--kv-bits {kv_bits}: use 16, 8 or 4")
    from vlq.kv import make_quantized_cache

    return make_quantized_cache(kv_bits, model.config)


def build_inputs(loaded: LoadedVlm, prompt: str, image: str | Path | None) -> dict:
    """Chat-templated model inputs for one prompt (and image) on the model's device."""
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": prompt}]
    messages = [{"role": "user", "content": content}]
    device = next(loaded.model.parameters()).device
    if image is not None:
        if loaded.processor is None or not hasattr(loaded.processor, "image_processor"):
            raise InputError(f"{loaded.folder} has no image processor: --image needs a vision-language checkpoint")
        from PIL import Image

        try:
            picture = Image.open(image).convert("RGB")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read image {image}: {exc}") from None
        text = loaded.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = loaded.processor(images=[picture], text=[text], return_tensors="pt")
    else:
        tokenizer = loaded.tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        else:
            text = prompt
        inputs = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def generate_text(
    loaded: LoadedVlm,
    prompt: str,
    image: str | Path | None = None,
    max_new_tokens: int = 32,
    kv_bits: int = 16,
    on_text: Callable[[str], None] | None = None,
) -> GenerateResult:
    """Greedy decoding; `on_text` receives the text as it streams."""
    from transformers import TextIteratorStreamer

    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    inputs = build_inputs(loaded, prompt, image)
    cache = make_cache(kv_bits, loaded.model)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True) if on_text else None
    kwargs = dict(inputs, max_new_tokens=max_new_tokens, do_sample=False, past_key_values=cache, streamer=streamer,
                  pad_token_id=loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id)
    start = time.perf_counter()
    if streamer is None:
        with torch.no_grad():
            output = loaded.model.generate(**kwargs)
    else:
        import threading

        result: dict = {}

        def run() -> None:
            try:
                with torch.no_grad():
                    result["output"] = loaded.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc
                streamer.end()

        worker = threading.Thread(target=run)
        worker.start()
        for piece in streamer:
            on_text(piece)
        worker.join()
        if "error" in result:
            raise result["error"]
        output = result["output"]
    seconds = time.perf_counter() - start
    new = output[0, inputs["input_ids"].shape[1]:]
    text = loaded.tokenizer.decode(new, skip_special_tokens=True)
    return GenerateResult(text, int(new.numel()), seconds, loaded.quantized, kv_bits)


def generate(
    model: str, prompt: str, image: str | None = None, max_new_tokens: int = 32, kv_bits: int = 16,
    device: str = "auto", on_text: Callable[[str], None] | None = None,
    vit_backend: str = "torch", vit_dir: str | None = None,
) -> GenerateResult:
    """Load `model` (16-bit or quantized folder) and generate; `vit_backend` onnxruntime or tensorrt
    takes the image embeddings from the encoder that `vlq export-vit` wrote to `vit_dir`."""
    from vlq.export.runtime import check_vit_options, use_exported_vit

    if image is not None and not Path(image).is_file():
        raise InputError(f"image {image} does not exist")
    check_vit_options(vit_backend, vit_dir)
    loaded = load_vlm(model, device)
    use_exported_vit(loaded, vit_dir, vit_backend)
    return generate_text(loaded, prompt, image, max_new_tokens, kv_bits, on_text)
