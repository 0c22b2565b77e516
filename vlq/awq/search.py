"""AWQ's two searches as pure functions: per-channel input scales, and per-group weight clipping.

Scales (AWQ, Lin et al. 2023): salient input channels are those with large activations; scaling
them up by `s` before quantization and folding `1/s` into the previous op protects them. The
scale is `x_mean**r / w_mean**(1-r)`, with `r` either searched on a grid (minimizing the output
error of the module that reads the linears) or fixed (statistics only, LMDeploy's default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vlq.awq.quantize import fake_quantize


def weight_channel_means(weights: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """Mean over output rows of |w| normalized by its group's max: AWQ's per-input-channel weight salience."""
    weight = torch.cat([w.float() for w in weights], dim=0)
    grouped = weight.abs().reshape(-1, group_size)
    normalized = grouped / (grouped.amax(dim=1, keepdim=True) + 1e-6)
    return normalized.reshape(weight.shape).mean(dim=0)


def balanced_scales(x_stat: torch.Tensor, w_mean: torch.Tensor, ratio: float) -> torch.Tensor:
    """`x_stat**ratio / w_mean**(1-ratio)`, normalized so that max*min == 1 (keeps magnitudes centered)."""
    scales = (x_stat.float().pow(ratio) / (w_mean.float().pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
    return scales / (scales.max() * scales.min()).sqrt()


@dataclass(frozen=True)
class ScaleSearchResult:
    scales: torch.Tensor
    ratio: float | None  # None: no scaling won (plain RTN)
    loss: float
    loss_unscaled: float


def search_scales(
    x_mean: torch.Tensor,
    w_mean: torch.Tensor,
    output_error: Callable[[torch.Tensor], float],
    n_grid: int = 20,
) -> ScaleSearchResult:
    """Grid search of the exponent `ratio` in [0, 1): the scales whose `output_error` is smallest.

    `output_error(scales)` must return the error of the inspected module's output when its
    linears compute with `fake_quantize(W * scales) / scales`. Unlike AutoAWQ, all-ones scales
    (plain RTN) are a candidate too, so the result is never worse than RTN on the calibration data.
    """
    ones = torch.ones_like(x_mean, dtype=torch.float32)
    loss_unscaled = output_error(ones)
    best_scales, best_ratio, best_loss = ones, None, loss_unscaled
    for step in range(n_grid):
        ratio = step / n_grid
        scales = balanced_scales(x_mean, w_mean, ratio)
        loss = output_error(scales)
        if loss < best_loss:
            best_scales, best_ratio, best_loss = scales, ratio, loss
    return ScaleSearchResult(best_scales, best_ratio, best_loss, loss_unscaled)


def statistic_scales(x_absmax: torch.Tensor, w_mean: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Scales from statistics alone, no search (LMDeploy's default `smooth_ln_fcs`, alpha 0.5)."""
    return balanced_scales(x_absmax, w_mean, alpha)


def scaled_fake_quantize(weight: torch.Tensor, scales: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """What a linear computes with after scaling: `Q(W * s) / s` (in-channel scales `s`)."""
    s = scales.to(weight.device, weight.dtype)
    return fake_quantize(weight * s, bits, group_size) / s


def search_clip(
    weight: torch.Tensor,
    inputs: torch.Tensor,
    bits: int,
    group_size: int,
    n_grid: int = 20,
    max_shrink: float = 0.5,
    n_tokens: int = 512,
    rows_per_batch: int = 256,
) -> torch.Tensor:
    """Per (output row, group) clipping threshold minimizing the group's partial output error.

    Shrinks each group's max |w| by up to `max_shrink` in `n_grid` steps and keeps the threshold
    whose quantized weights give the closest `x_group . w_group` over a token subsample.
    Returns `[out, in // group_size]` thresholds (the original max where clipping doesn't help).
    """
    out_features, in_features = weight.shape
    n_groups = in_features // group_size
    x = inputs.reshape(-1, in_features)
    x = x[:: max(1, x.shape[0] // n_tokens)].float()
    x = x.reshape(1, -1, n_groups, group_size)  # [1, tokens, groups, g]
    thresholds = []
    for rows in weight.float().split(rows_per_batch):
        w = rows.reshape(rows.shape[0], 1, n_groups, group_size)
        original_max = w.abs().amax(dim=-1, keepdim=True)  # [r, 1, groups, 1]
        best_max = original_max.clone()
        best_err = torch.full_like(original_max, float("inf"))
        reference = (x * w).sum(dim=-1)  # [r, tokens, groups]
        for step in range(int(max_shrink * n_grid)):
            max_val = original_max * (1 - step / n_grid)
            clipped = torch.clamp(w, -max_val, max_val)
            quantized = fake_quantize(clipped.reshape(rows.shape[0], -1), bits, group_size).reshape(w.shape)
            err = ((x * quantized).sum(dim=-1) - reference).pow(2).mean(dim=1).reshape(best_err.shape)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better, max_val, best_max)
        thresholds.append(best_max.reshape(rows.shape[0], n_groups))
    return torch.cat(thresholds)


def apply_clip(weight: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """`weight` with each group clamped to `[-t, t]` of its threshold."""
    out_features, in_features = weight.shape
    group_size = in_features // thresholds.shape[1]
    grouped = weight.reshape(out_features, -1, group_size)
    t = thresholds.to(weight.device, weight.dtype)[..., None]
    return torch.clamp(grouped, -t, t).reshape(weight.shape)
