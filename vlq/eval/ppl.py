"""`vlq eval ppl`: perplexity of the language model on a test text, in non-overlapping windows.

The standard GPTQ/AWQ protocol: tokenize the whole test text once, cut it into
`len(tokens) // seqlen` windows of `seqlen` tokens (the tail is dropped), and report
`exp(total next-token NLL / predicted tokens)`. Every window has the same length, so this equals
GPTQ's `exp(mean of per-window losses)`. The built-in names read the test split shipped with vlq
(`vlq/data/ptb/test.txt`, `vlq/data/wikitext-2/test.txt`: the tokenized WikiText-2, so numbers
are comparable between vlq runs, not with papers that use `wikitext-2-raw-v1`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vlq.calib.data import SHIPPED, shipped_text_path
from vlq.errors import InputError, UsageError


@dataclass
class PerplexityResult:
    model: str
    quantized: bool
    dataset: str
    source: str
    seqlen: int
    windows: int
    tokens: int
    ppl: float
    seconds: float


def read_test_text(dataset: str) -> tuple[str, str]:
    """(text, where it came from) for `wikitext2`, `ptb` or a local text file."""
    if dataset in SHIPPED:
        path = shipped_text_path(dataset, "test")
        source = f"shipped:{SHIPPED[dataset]}/test.txt"
    else:
        path = Path(dataset)
        if not path.is_file():
            raise InputError(f"--dataset {dataset}: not {' or '.join(SHIPPED)}, and no such file")
        source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not text.strip():
        raise InputError(f"{path} is empty")
    return text, source


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    seqlen: int,
    max_windows: int | None = None,
    on_window: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[float, int]:
    """(perplexity, windows) of `model` over the 1-D `token_ids`, in windows of `seqlen` tokens."""
    windows = token_ids.numel() // seqlen
    if windows == 0:
        raise InputError(f"the text has {token_ids.numel()} tokens, fewer than --seqlen {seqlen}")
    if max_windows is not None:
        windows = min(windows, max_windows)
    device = next(model.parameters()).device
    total_nll, predicted = 0.0, 0
    for w in range(windows):
        ids = token_ids[w * seqlen : (w + 1) * seqlen].unsqueeze(0).to(device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        total_nll += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        predicted += seqlen - 1
        on_window(w + 1, windows)
    return math.exp(total_nll / predicted), windows


def evaluate_ppl(
    model: str,
    dataset: str = "wikitext2",
    seqlen: int = 2048,
    max_windows: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    on_window: Callable[[int, int], None] = lambda done, total: None,
) -> PerplexityResult:
    """Load `model` (16-bit or quantized folder) and measure its perplexity on `dataset`."""
    from vlq.eval.runner import load_model

    if seqlen < 2:
        raise UsageError("--seqlen must be at least 2")
    if max_windows is not None and max_windows < 1:
        raise UsageError("--max-windows must be at least 1")
    text, source = read_test_text(dataset)
    start = time.perf_counter()
    loaded = load_model(model, device, dtype)
    token_ids = loaded.tokenizer(text, return_tensors="pt").input_ids[0]
    ppl, windows = perplexity(loaded.model, token_ids, seqlen, max_windows, on_window)
    return PerplexityResult(
        model=model,
        quantized=loaded.quantized,
        dataset=dataset,
        source=source,
        seqlen=seqlen,
        windows=windows,
        tokens=windows * seqlen,
        ppl=ppl,
        seconds=time.perf_counter() - start,
    )
