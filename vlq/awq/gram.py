"""Input second moments (Gram matrices) and the searches that need nothing else.

For a linear with weight `W` and a candidate `W'` (scaled-and-quantized, or clipped-and-
quantized), the squared output error over calibration tokens `x_t` is
`sum_t ||(W' - W) x_t||^2 = sum_rows d H d^T` with `H = sum_t x_t x_t^T`. So a candidate is scored
from `H` alone, exactly over every token and in time independent of their number:

- a scale group whose error is measured at the linear itself (o_proj, down_proj) needs the full
  `H` (`[in, in]`), accumulated once while the 16-bit layer runs;
- the clip search scores each (row, group) on its own, so it needs only the `group_size`-square
  diagonal blocks of `H`. AutoAWQ instead multiplies a 512-token subsample elementwise per
  candidate; the objective is the same, here over all tokens and as a batched matmul.

Accumulation is per calibration sample, in sample order, so the statistics do not depend on how
samples are batched (`--batch-size`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from vlq.awq.quantize import fake_quantize

#: Row batch of the searches: bounds their temporaries to a few MiB per 1k input channels.
ROWS_PER_BATCH = 1024


@contextlib.contextmanager
def exact_tf32(dtype: torch.dtype) -> Iterator[None]:
    """Allow TF32 matmuls while data is fp16/bf16: their 10/7-bit mantissas fit TF32's 10 bits,
    so products are exact and sums are fp32, as fast as tensor cores go; fp32 data keeps full fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype in (torch.float16, torch.bfloat16)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def add_gram(acc: torch.Tensor, x: torch.Tensor) -> None:
    """`acc += x^T x` for one sample's tokens `x` `[tokens, in]`; `acc` is float32 `[in, in]`."""
    with exact_tf32(x.dtype):
        xf = x.float()
        acc.addmm_(xf.t(), xf)


def add_block_gram(acc: torch.Tensor, x: torch.Tensor, group_size: int) -> None:
    """`acc[g] += x_g^T x_g` for each input group `g`; `acc` is float64 `[in // group, group, group]`."""
    tokens, channels = x.shape
    xg = x.double().reshape(tokens, channels // group_size, group_size).transpose(0, 1)  # [G, T, g]
    acc.baddbmm_(xg.transpose(1, 2), xg)


def scale_block_gram(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The blocks of the input `x / s` that the linears read once `scales` are folded in."""
    inv = (1.0 / scales.double().to(blocks.device)).reshape(blocks.shape[0], -1)
    return blocks * inv[:, :, None] * inv[:, None, :]


def quadratic_error(delta: torch.Tensor, gram: torch.Tensor) -> float:
    """`sum_rows d H d^T` for a weight difference `delta` `[out, in]` and a full Gram `H` (float64 total)."""
    total = 0.0
    gram = gram.float()
    for rows in delta.split(ROWS_PER_BATCH):
        d = rows.float()
        total += float(((d @ gram) * d).sum(dtype=torch.float64))
    return total


def search_clip_gram(
    weight: torch.Tensor,
    blocks: torch.Tensor,
    bits: int,
    group_size: int,
    n_grid: int = 20,
    max_shrink: float = 0.5,
) -> torch.Tensor:
    """Per (output row, group) clipping threshold minimizing the group's partial output error.

    Shrinks each group's max |w| by up to `max_shrink` in `n_grid` steps (step 0: no clipping)
    and keeps the threshold whose quantized weights `q` minimize `(q - w) H_g (q - w)^T`, i.e.
    the squared error of `x_g . w_g` summed over all calibration tokens.
    Returns `[out, in // group_size]` thresholds (the original max where clipping doesn't help).
    """
    out_features, in_features = weight.shape
    n_groups = in_features // group_size
    h = blocks.float().to(weight.device)  # [G, g, g]
    thresholds = []
    for rows in weight.split(ROWS_PER_BATCH):
        w = rows.float().reshape(rows.shape[0], n_groups, group_size)
        original_max = w.abs().amax(dim=-1, keepdim=True)  # [r, G, 1]
        best_max = original_max.clone()
        best_err = torch.full_like(original_max, float("inf"))
        for step in range(int(max_shrink * n_grid)):
            max_val = original_max * (1 - step / n_grid)
            clipped = torch.clamp(w, -max_val, max_val)
            # rounded in the weight's own dtype, as the final quantization will be
            candidate = clipped.reshape(rows.shape[0], -1).to(rows.dtype)
            q = fake_quantize(candidate, bits, group_size).float().reshape(w.shape)
            d = (q - w).transpose(0, 1)  # [G, r, g]
            err = (torch.bmm(d, h) * d).sum(dim=-1).t().unsqueeze(-1)  # [r, G, 1]
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better, max_val, best_max)
        thresholds.append(best_max.reshape(rows.shape[0], n_groups))
    return torch.cat(thresholds)
