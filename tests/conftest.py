"""Shared fixtures: tiny checkpoints generated once per test session (no downloads)."""

from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    from vlq.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("ckpt") / "tiny-llava")


@pytest.fixture(scope="session")
def tiny_qwen2_vl(tmp_path_factory):
    from vlq.tiny import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("ckpt") / "tiny-qwen2-vl")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    from vlq.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


@pytest.fixture(scope="session")
def quantized_llava(tiny_llava, tmp_path_factory):
    """The tiny LLaVA after `auto_awq` with scale search (shared by the load/generate tests)."""
    from vlq.awq.pipeline import AutoAwqOptions, auto_awq

    out = tmp_path_factory.mktemp("out") / "tiny-llava-w4a16"
    return auto_awq(
        AutoAwqOptions(model=str(tiny_llava), work_dir=str(out), calib_samples=8, calib_seqlen=64,
                       search_scale=True, device="cpu")
    )
