"""Quick accuracy and perplexity of the reference VLM, for its training script, benchmarks and CI.

Accuracy reads the option-letter logits after the generation prompt (argmax over the letters
the question offers) and scores MMBench's circular way: a question counts only when the
original and every rotated copy are right. `vlq eval mmbench` is the full harness; this is the
small direct path that also works on a model in memory (RTN copies, half-trained models).

With a KV-cache factory, the prompt minus its last token is prefilled into the cache and the last
token is run against it, so the letter logits read quantized keys and values (a single prefill
would attend to the exact ones, and the first answer token would not feel the cache at all).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from vlq.awq.quantize import fake_quantize
from vlq.reference.data import rotate
from vlq.reference.questions import Question, mmbench_prompt
from vlq.reference.scenes import Scene, render_batch

LETTERS = "ABCD"
DECODER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class McqAccuracy:
    """Circular and vanilla (main rows only) accuracy over main questions, and per category."""

    circular: float
    vanilla: float
    questions: int
    rows: int
    per_category: dict[str, float] = field(default_factory=dict)


def chat_text(tokenizer, prompt: str, image_tokens: int) -> str:
    """The templated user turn with the image placeholder expanded, as the LLaVA processor does."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text.replace("<image>", "<image>" * image_tokens)


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 `[B, H, W, 3]` -> CLIP pixel values `[B, 3, H, W]` (what the image processor computes)."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def circular_rows(items: Sequence[tuple[Scene, Question]]) -> list[tuple[int, Scene, Question]]:
    """(main index, scene, rotated question) for every main row and circular copy."""
    return [(i, scene, rotate(q, k)) for i, (scene, q) in enumerate(items) for k in range(len(q.options))]


def _image_tokens(model) -> int:
    return int(model.config.image_seq_length)


def _first_param(model: nn.Module) -> torch.nn.Parameter:
    return next(p for p in model.parameters() if p.is_floating_point())


def _batches(lengths: list[int], batch_size: int, equal_lengths: bool) -> list[list[int]]:
    """Row numbers per forward pass: consecutive rows, or rows of one length (no padding: a cache needs none)."""
    if not equal_lengths:
        return [list(range(s, min(s + batch_size, len(lengths)))) for s in range(0, len(lengths), batch_size)]
    by_length: dict[int, list[int]] = defaultdict(list)
    for row, length in enumerate(lengths):
        by_length[length].append(row)
    return [rows[s : s + batch_size] for rows in by_length.values() for s in range(0, len(rows), batch_size)]


@torch.no_grad()
def letter_choices(
    model: nn.Module,
    processor,
    rows: Sequence[tuple[int, Scene, Question]],
    batch_size: int = 64,
    cache_factory: Callable[[], object] | None = None,
) -> list[str]:
    """The chosen letter for each row: argmax of the next-token logits over its option letters."""
    tokenizer = processor.tokenizer
    param = _first_param(model)
    device = param.device
    letter_ids = torch.tensor([tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS], device=device)
    mean, std = processor.image_processor.image_mean, processor.image_processor.image_std
    encoded = [
        tokenizer.encode(
            chat_text(tokenizer, mmbench_prompt(q), _image_tokens(model)), add_special_tokens=False
        )
        for _, _, q in rows
    ]
    choices: list[str] = [""] * len(rows)
    for batch in _batches([len(e) for e in encoded], batch_size, cache_factory is not None):
        lengths = torch.tensor([len(encoded[r]) for r in batch], device=device)
        ids = torch.full((len(batch), int(lengths.max())), tokenizer.pad_token_id, dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, : len(encoded[r])] = torch.tensor(encoded[r])
        ids = ids.to(device)
        mask = (torch.arange(ids.shape[1], device=device)[None] < lengths[:, None]).long()
        images = render_batch([rows[r][1] for r in batch]).to(device)
        pixels = normalize_images(images, mean, std).to(param.dtype)
        if cache_factory is None:
            logits = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_cache=False).logits
            last = logits[torch.arange(len(batch), device=device), lengths - 1]
        else:
            cache = cache_factory()
            model(input_ids=ids[:, :-1], pixel_values=pixels, past_key_values=cache, use_cache=True)
            last = model(input_ids=ids[:, -1:], past_key_values=cache, use_cache=True).logits[:, -1]
        scores = last[:, letter_ids].float()
        for row_scores, r in zip(scores, batch):
            choices[r] = LETTERS[int(row_scores[: len(rows[r][2].options)].argmax())]
    return choices


def mcq_accuracy(
    model: nn.Module,
    processor,
    items: Sequence[tuple[Scene, Question]],
    batch_size: int = 64,
    cache_factory: Callable[[], object] | None = None,
) -> McqAccuracy:
    """Circular accuracy of `model` on (scene, question) items, every rotation asked."""
    rows = circular_rows(items)
    choices = letter_choices(model, processor, rows, batch_size, cache_factory)
    right: dict[int, list[bool]] = defaultdict(list)
    vanilla: dict[int, bool] = {}
    for (index, _, q), choice in zip(rows, choices):
        hit = choice == q.answer_letter
        right[index].append(hit)
        vanilla.setdefault(index, hit)
    circular = {index: all(hits) for index, hits in right.items()}
    by_category: dict[str, list[bool]] = defaultdict(list)
    for index, (_, q) in enumerate(items):
        by_category[q.category].append(circular[index])
    return McqAccuracy(
        circular=sum(circular.values()) / len(items),
        vanilla=sum(vanilla.values()) / len(items),
        questions=len(items),
        rows=len(rows),
        per_category={name: sum(hits) / len(hits) for name, hits in sorted(by_category.items())},
    )


@torch.no_grad()
def perplexity(
    model: nn.Module,
    token_ids: Sequence[int] | torch.Tensor,
    seqlen: int = 2048,
    max_windows: int | None = None,
    chunk: int | None = None,
    cache_factory: Callable[[], object] | None = None,
) -> float:
    """exp(mean next-token NLL) over non-overlapping `seqlen` windows (GPTQ/AWQ's protocol).

    With `chunk` and `cache_factory`, each window is fed `chunk` tokens at a time through the
    cache, so every chunk attends to the cached (e.g. quantized) keys and values of the ones before.
    """
    param = _first_param(model)
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    windows = ids[: ids.numel() // seqlen * seqlen].view(-1, seqlen)
    if max_windows is not None:
        windows = windows[:max_windows]
    total, count = 0.0, 0
    for window in windows:
        window = window.to(param.device)[None]
        if cache_factory is None:
            logits = model(input_ids=window, use_cache=False).logits
        else:
            cache = cache_factory()
            logits = torch.cat(
                [
                    model(input_ids=window[:, s : s + chunk], past_key_values=cache, use_cache=True).logits
                    for s in range(0, seqlen, chunk)
                ],
                dim=1,
            )
        nll = nn.functional.cross_entropy(logits[0, :-1].float(), window[0, 1:], reduction="sum")
        total += float(nll)
        count += seqlen - 1
    return math.exp(total / count)


def decoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The language model's decoder-layer linears (what w4a16 quantizes); vision and lm_head excluded."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and "language_model" in name
        and name.rsplit(".", 1)[-1] in DECODER_LINEARS
    ]


@torch.no_grad()
def rtn_quantize_(model: nn.Module, bits: int = 4, group_size: int = 128) -> int:
    """Round-to-nearest w{bits} g{group_size} on every decoder linear, in place (fake quantization)."""
    linears = decoder_linears(model)
    for _, linear in linears:
        linear.weight.copy_(fake_quantize(linear.weight.data, bits, group_size))
    return len(linears)
