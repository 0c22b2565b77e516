"""Pure quantization math against plain references: RTN, packing order, AutoAWQ layout."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlq.awq.pack import AWQ_PACK_ORDER, dequantize_awq, pack_awq, pack_int4, unpack_awq, unpack_int4
from vlq.awq.quantize import dequantize, fake_quantize, quantize


def autoawq_pack_reference(intweight_in_out: torch.Tensor) -> torch.Tensor:
    """AutoAWQ's packing loop, written out: nibble i of column c holds column 8c + order[i]."""
    rows, cols = intweight_in_out.shape
    packed = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for col in range(cols // 8):
        for i in range(8):
            packed[:, col] |= intweight_in_out[:, col * 8 + AWQ_PACK_ORDER[i]].long() << (4 * i)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 9), packs=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_pack_matches_autoawq_loop_and_round_trips(rows, packs, seed):
    codes = torch.randint(0, 16, (rows, packs * 8), generator=torch.Generator().manual_seed(seed))
    packed = pack_int4(codes)
    assert torch.equal(packed, autoawq_pack_reference(codes))
    assert torch.equal(unpack_int4(packed), codes)


@settings(max_examples=20, deadline=None)
@given(out=st.sampled_from([8, 16, 24]), groups=st.integers(1, 3), group=st.sampled_from([8, 32, 64]), seed=st.integers(0, 999))
def test_rtn_error_is_half_a_step_except_at_clamped_codes(out, groups, group, seed):
    weight = torch.randn(out, groups * group, generator=torch.Generator().manual_seed(seed))
    q = quantize(weight, 4, group)
    assert q.codes.min() >= 0 and q.codes.max() <= 15
    step = q.scales.repeat_interleave(group, dim=1)
    error = (dequantize(q) - weight).abs()
    slack = 1e-5 + step * 1e-3
    interior = (q.codes > 0) & (q.codes < 15)
    assert torch.all(error[interior] <= (step / 2 + slack)[interior])
    # The integer zero point shifts the grid by up to half a step, so a group's ends may be a step
    # off; only a group of one sign (zero point clamped, as in AutoAWQ) can be off by more.
    grouped = weight.reshape(out, groups, group)
    mixed = ((grouped.amin(-1) < 0) & (grouped.amax(-1) > 0)).repeat_interleave(group, dim=1)
    assert torch.all(error[mixed] <= (step + slack)[mixed])
    assert torch.allclose(fake_quantize(weight, 4, group), dequantize(q), atol=1e-6)


def test_group_min_and_max_are_representable():
    weight = torch.tensor([[-1.0, 0.0, 0.5, 2.0] * 2])
    q = quantize(weight, 4, 8)
    recovered = dequantize(q)
    assert abs(float(recovered.max()) - 2.0) < float(q.scales.max()) / 2 + 1e-6
    assert abs(float(recovered.min()) + 1.0) < float(q.scales.max()) / 2 + 1e-6


def test_awq_tensors_have_autoawq_shapes_and_dequantize_back():
    weight = torch.randn(48, 256)
    q = quantize(weight, 4, 128)
    tensors = pack_awq(q)
    assert tensors["qweight"].shape == (256, 6) and tensors["qweight"].dtype == torch.int32
    assert tensors["qzeros"].shape == (2, 6) and tensors["qzeros"].dtype == torch.int32
    assert tensors["scales"].shape == (2, 48) and tensors["scales"].dtype == torch.float16
    back = unpack_awq(**tensors, group_size=128)
    assert torch.equal(back.codes, q.codes) and torch.equal(back.zeros, q.zeros)
    dense = dequantize_awq(tensors["qweight"], tensors["qzeros"], tensors["scales"].float(), 128)
    fp16_scales = tensors["scales"].float().t().repeat_interleave(128, 1)
    reference = (q.codes.float() - q.zeros.repeat_interleave(128, 1).float()) * fp16_scales
    assert torch.allclose(dense.t(), reference, atol=1e-6)


def test_wrong_group_size_is_a_clear_error():
    with pytest.raises(ValueError, match="does not divide"):
        quantize(torch.randn(8, 100), 4, 128)


@given(seed=st.integers(0, 2**16), spread=st.floats(1e-3, 10.0))
@settings(max_examples=25, deadline=None)
def test_fp16_weights_round_in_fp16_as_the_stored_model_dequantizes(seed, spread):
    """fp16: scale, zero, codes and product in fp16 arithmetic (AutoAWQ's `pseudo_quantize_tensor`), so
    the search's fake quantization is bit-identical to what the packed checkpoint dequantizes to."""
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(32, 256, generator=gen) * spread).half()
    grouped = weight.reshape(-1, 128)
    scale = (grouped.amax(1, keepdim=True) - grouped.amin(1, keepdim=True)).clamp(min=1e-5) / 15
    zero = (-torch.round(grouped.amin(1, keepdim=True) / scale)).clamp(0, 15)
    reference = ((torch.clamp(torch.round(grouped / scale) + zero, 0, 15) - zero) * scale).reshape(weight.shape)
    assert torch.equal(fake_quantize(weight, 4, 128), reference)
    stored = pack_awq(quantize(weight, 4, 128))
    assert torch.equal(dequantize_awq(stored["qweight"], stored["qzeros"], stored["scales"], 128).t(), reference)


def test_fp32_and_bf16_weights_round_in_fp32():
    weight = torch.randn(16, 256)
    for dtype in (torch.float32, torch.bfloat16):
        w = weight.to(dtype)
        assert torch.equal(fake_quantize(w, 4, 128), fake_quantize(w.float(), 4, 128).to(dtype))
