"""The model side of the MCQ harness: a tiny protocol, and its implementation for transformers VLMs.

The harness never touches a model directly. It hands batches of `McqInput` to `prepare` (run in a
background loader thread: tokenization and image preprocessing on the CPU), then the prepared
batch to `answer` (greedy generation -> texts) or `option_probs` (one forward pass -> a
probability per option letter). Anything with these three methods can be evaluated, which is how
the tests drive the harness without a network.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vlq.errors import InputError, UsageError
from vlq.eval.prompt import build_messages

KV_BITS = (16, 8, 4)
#: Characters of the templated prompt's end that decide how an option letter is tokenized after it.
_TAIL_CHARS = 64


@dataclass(frozen=True)
class McqInput:
    image: Any  # a PIL image, RGB
    prompt: str
    letters: tuple[str, ...]


class McqModel(Protocol):
    def prepare(self, items: Sequence[McqInput]) -> Any:
        """CPU-side work for one batch; runs in the loader thread, ahead of the model."""

    def answer(self, batch: Any) -> list[str]:
        """A short greedy answer per question."""

    def option_probs(self, batch: Any) -> list[dict[str, float]]:
        """Per question, the probability of each of its option letters as the next token."""


def kv_cache_factory(bits: int):
    """vlq's `make_quantized_cache` for 8/4 bits, None for 16; a clear UsageError when it is missing."""
    if bits not in KV_BITS:
        raise UsageError(f"--kv-bits {bits}: use 16, 8 or 4")
    if bits == 16:
        return None
    try:
        from vlq.kv import make_quantized_cache
    except ModuleNotFoundError as exc:
        if exc.name != "vlq.kv":
            raise
        raise UsageError(
            f"--kv-bits {bits} needs vlq.kv (the quantized KV cache), which this vlq build lacks"
        ) from None
    return make_quantized_cache


def make_kv_cache(bits: int, model: torch.nn.Module):
    """None (transformers' default cache) for 16 bits, else a fresh quantized cache for one call."""
    factory = kv_cache_factory(bits)
    return None if factory is None else factory(bits, model.config)


def load_model(path: str, device: str = "auto", dtype: str = "auto"):
    """The one place the harness loads a checkpoint (16-bit or vlq/AutoAWQ 4-bit) -> `LoadedVlm`."""
    from vlq.loading import load_vlm

    return load_vlm(path, device=device, dtype=dtype)


def letter_token_ids(tokenizer, text: str, letters: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The tokens that start each letter when written right after `text` ("A" and " A" forms).

    Models differ in whether they answer "A" or " A" after their generation prompt, so both are
    scored (log-sum-exp). A token that starts several letters (a lone space) says nothing and is
    dropped. Only the end of `text` matters, so the tokenizer sees just that.
    """
    tail = text[-_TAIL_CHARS:]
    base = tokenizer.encode(tail, add_special_tokens=False)
    found: dict[str, set[int]] = {}
    for letter in letters:
        ids = set()
        for variant in (letter, " " + letter):
            encoded = tokenizer.encode(tail + variant, add_special_tokens=False)
            if encoded[: len(base)] == base and len(encoded) > len(base):
                ids.add(encoded[len(base)])
        if not ids:  # the letter merged into the prompt's last token: take the letter on its own
            ids.add(tokenizer.encode(letter, add_special_tokens=False)[0])
        found[letter] = ids
    shared = Counter(token for ids in found.values() for token in ids)
    result = {letter: tuple(sorted(t for t in ids if shared[t] == 1)) for letter, ids in found.items()}
    clashing = [letter for letter, ids in result.items() if not ids]
    if clashing:
        raise InputError(f"option letters {', '.join(clashing)} have no token of their own in this tokenizer")
    return result


@dataclass
class HfBatch:
    inputs: dict
    texts: list[str]
    letters: list[tuple[str, ...]]


class HfVlmRunner:
    """A transformers VLM through its own processor, chat template and `generate`."""

    def __init__(self, model, processor, kv_bits: int = 16, max_new_tokens: int = 32):
        if processor is None or not hasattr(processor, "image_processor"):
            raise InputError("the model folder has no image processor: MMBench needs a vision-language model")
        if not getattr(processor, "chat_template", None):
            raise InputError(
                "the model's processor has no chat template: vlq prompts through the model's own template"
            )
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.kv_bits = kv_bits
        self.max_new_tokens = max_new_tokens
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = next(model.parameters()).device
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        self._letter_ids: dict[tuple[str, tuple[str, ...]], dict[str, tuple[int, ...]]] = {}

    def prepare(self, items: Sequence[McqInput]) -> HfBatch:
        texts = [
            self.processor.apply_chat_template(build_messages(item.prompt), add_generation_prompt=True)
            for item in items
        ]
        inputs = self.processor(
            images=[item.image for item in items],
            text=texts,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        return HfBatch(dict(inputs), texts, [item.letters for item in items])

    def _on_device(self, inputs: dict) -> dict:
        moved = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, dtype=self.dtype if value.is_floating_point() else None)
            moved[name] = value
        return moved

    @torch.no_grad()
    def answer(self, batch: HfBatch) -> list[str]:
        inputs = self._on_device(batch.inputs)
        output = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            past_key_values=make_kv_cache(self.kv_bits, self.model),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def _last_logits(self, inputs: dict) -> torch.Tensor:
        """Next-token logits after the prompt, `[batch, vocab]` float32.

        With a quantized KV cache, all but the last prompt token are prefilled into the cache and
        the last one runs against it: a single forward pass attends to the exact keys and values,
        so the letter logits would never feel the cache.
        """
        cache = make_kv_cache(self.kv_bits, self.model)
        if cache is None:
            return self.model(**inputs, use_cache=False).logits[:, -1, :].float()
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        prefix = {**inputs, "input_ids": ids[:, :-1], "attention_mask": mask[:, :-1]}
        self.model(**prefix, past_key_values=cache, use_cache=True)
        last = self.model(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=cache, use_cache=True)
        return last.logits[:, -1, :].float()

    @torch.no_grad()
    def option_probs(self, batch: HfBatch) -> list[dict[str, float]]:
        logits = self._last_logits(self._on_device(batch.inputs))
        results = []
        for row, text, letters in zip(logits, batch.texts, batch.letters):
            key = (text[-_TAIL_CHARS:], letters)
            if key not in self._letter_ids:
                self._letter_ids[key] = letter_token_ids(self.tokenizer, text, letters)
            ids = self._letter_ids[key]
            scores = torch.stack([torch.logsumexp(row[list(ids[letter])], 0) for letter in letters])
            probs = torch.softmax(scores, 0).tolist()
            results.append(dict(zip(letters, probs)))
        return results


def open_runner(
    path: str, kv_bits: int, max_new_tokens: int, device: str, dtype: str,
    vit_backend: str = "torch", vit_dir: str | None = None,
) -> tuple[HfVlmRunner, bool]:
    """Load `path` and wrap it; also says whether the checkpoint is 4-bit quantized (w4a16).

    `vit_backend` onnxruntime / tensorrt takes image embeddings from a `vlq export-vit` folder.
    """
    from vlq.export.runtime import check_vit_options, use_exported_vit

    check_vit_options(vit_backend, vit_dir)
    loaded = load_model(path, device, dtype)
    use_exported_vit(loaded, vit_dir, vit_backend)
    runner = HfVlmRunner(loaded.model, loaded.processor, kv_bits, max_new_tokens)
    return runner, loaded.quantized
