"""Scale folding, scale and clip search on small synthetic layers."""

import torch
from torch import nn

from vlq.awq.fold import fold_scales
from vlq.awq.quantize import fake_quantize
from vlq.awq.search import apply_clip, balanced_scales, search_clip, search_scales, weight_channel_means


class NormThenLinears(nn.Module):
    """LayerNorm -> two linears, then a linear -> linear pair: every kind of fold."""

    def __init__(self, width=64):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.a = nn.Linear(width, 32)
        self.b = nn.Linear(width, 32)
        self.up = nn.Linear(32, 64)
        self.down = nn.Linear(64, 16)

    def forward(self, x):
        h = self.norm(x)
        return torch.cat([self.a(h), self.b(h)], -1), self.down(self.up(self.a(h)))


def test_folding_scales_leaves_the_float_function_unchanged():
    torch.manual_seed(0)
    model = NormThenLinears().double()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 2)
        model.norm.bias.normal_()
    x = torch.randn(5, 64, dtype=torch.float64)
    before = model(x)
    fold_scales(model.norm, [model.a, model.b], torch.rand(64, dtype=torch.float64) + 0.5)
    fold_scales(model.up, [model.down], torch.rand(64, dtype=torch.float64) + 0.5)
    after = model(x)
    for b, a in zip(before, after):
        assert torch.allclose(b, a, atol=1e-10)


def test_balanced_scales_are_centered_and_positive():
    scales = balanced_scales(torch.rand(128) * 10 + 0.01, torch.rand(128) + 0.01, 0.5)
    assert torch.all(scales > 0)
    assert abs(float(scales.max() * scales.min()) - 1) < 1e-4


def test_scale_search_returns_the_lowest_loss_candidate_and_never_beats_rtn_worse():
    torch.manual_seed(1)
    weight = torch.randn(32, 128)
    x = torch.randn(256, 128)
    x[:, :4] *= 30  # salient channels
    reference = x @ weight.t()

    def error(scales):
        w = fake_quantize(weight * scales, 4, 32) / scales
        return float(((x @ w.t()) - reference).pow(2).mean())

    result = search_scales(x.abs().mean(0), weight_channel_means([weight], 32), error)
    assert result.loss <= result.loss_unscaled
    assert result.ratio is not None and result.loss < 0.8 * result.loss_unscaled
    assert abs(error(result.scales) - result.loss) < 1e-9


def test_clip_search_never_increases_the_partial_output_error():
    torch.manual_seed(2)
    weight = torch.randn(64, 128)
    x = torch.randn(300, 128)
    thresholds = search_clip(weight, x, 4, 32)
    assert thresholds.shape == (64, 4)
    original_max = weight.abs().reshape(64, 4, 32).amax(-1)
    assert torch.all(thresholds <= original_max + 1e-6) and torch.all(thresholds >= original_max * 0.5 - 1e-6)
    clipped = apply_clip(weight, thresholds)

    def group_error(w):
        out = (x.reshape(300, 1, 4, 32) * fake_quantize(w, 4, 32).reshape(1, 64, 4, 32)).sum(-1)
        ref = (x.reshape(300, 1, 4, 32) * weight.reshape(1, 64, 4, 32)).sum(-1)
        return (out - ref).pow(2).mean(0)

    assert torch.all(group_error(clipped) <= group_error(weight) + 1e-5)
    assert (thresholds < original_max - 1e-6).any()  # clipping helps somewhere on Gaussian weights
