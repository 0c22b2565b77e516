"""`vlq eval ppl`: window arithmetic on a model with known perplexity, then a tiny checkpoint and the CLI."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from vlq.cli import app
from vlq.errors import InputError
from vlq.eval.ppl import evaluate_ppl, perplexity, read_test_text


class Uniform(torch.nn.Module):
    """Equal logits over `vocab` tokens: perplexity is exactly `vocab`. Records the windows it saw."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, input_ids, use_cache):
        self.seen.append(input_ids.clone())
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


class Copycat(torch.nn.Module):
    """Predicts every next token perfectly from a known sequence: perplexity 1."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache):
        logits = torch.full((*input_ids.shape, self.vocab), -1e4)
        following = (input_ids + 1) % self.vocab  # the test sequence counts up
        logits.scatter_(-1, following.unsqueeze(-1), 0.0)
        return SimpleNamespace(logits=logits)


def test_uniform_model_has_perplexity_of_its_vocabulary_over_non_overlapping_windows():
    model = Uniform(vocab=37)
    ids = torch.arange(1000) % 37
    ppl, windows = perplexity(model, ids, seqlen=128)
    assert windows == 1000 // 128 and ppl == pytest.approx(37.0)
    assert [w[0, 0].item() for w in model.seen] == [(i * 128) % 37 for i in range(windows)]  # no overlap
    assert all(w.shape == (1, 128) for w in model.seen)
    assert perplexity(Uniform(37), ids, seqlen=128, max_windows=2)[1] == 2


def test_a_perfect_predictor_has_perplexity_one():
    ids = torch.arange(600) % 50
    ppl, _ = perplexity(Copycat(50), ids, seqlen=100)
    assert ppl == pytest.approx(1.0, abs=1e-6)


def test_text_shorter_than_a_window_is_an_input_error():
    with pytest.raises(InputError, match="fewer than --seqlen"):
        perplexity(Uniform(5), torch.arange(10), seqlen=64)


def test_shipped_test_splits_and_local_files(tmp_path):
    text, source = read_test_text("wikitext2")
    assert source == "shipped:wikitext-2/test.txt" and "Robert" in text[:200]
    assert read_test_text("ptb")[1] == "shipped:ptb/test.txt"
    (tmp_path / "mine.txt").write_text("hello world\n")
    assert read_test_text(str(tmp_path / "mine.txt")) == ("hello world\n", str(tmp_path / "mine.txt"))
    with pytest.raises(InputError, match="no such file"):
        read_test_text("c4")


def test_tiny_checkpoint_perplexity_is_near_its_vocabulary(tiny_llava):
    result = evaluate_ppl(str(tiny_llava), "ptb", seqlen=64, max_windows=3, device="cpu")
    assert result.windows == 3 and result.tokens == 192 and result.quantized is False
    vocab = 1024  # random weights: close to uniform over the tiny tokenizer's vocabulary
    assert vocab / 3 < result.ppl < vocab * 3
    assert math.isfinite(result.ppl)


def test_cli_json_and_errors(tiny_llava, tmp_path):
    (tmp_path / "t.txt").write_text("the cat sat on the mat . " * 60)
    ok = CliRunner().invoke(
        app,
        [
            "eval",
            "ppl",
            str(tiny_llava),
            "--dataset",
            str(tmp_path / "t.txt"),
            "--seqlen",
            "32",
            "--max-windows",
            "2",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["windows"] == 2 and report["seqlen"] == 32 and report["ppl"] > 1
    too_long = CliRunner().invoke(
        app,
        [
            "eval",
            "ppl",
            str(tiny_llava),
            "--dataset",
            str(tmp_path / "t.txt"),
            "--seqlen",
            "100000",
            "--device",
            "cpu",
        ],
    )
    assert too_long.exit_code == 3 and "fewer than --seqlen" in too_long.output
    missing = CliRunner().invoke(app, ["eval", "ppl", str(tiny_llava), "--dataset", "nope.txt"])
    assert missing.exit_code == 3
    bad = CliRunner().invoke(app, ["eval", "ppl", str(tiny_llava), "--seqlen", "1"])
    assert bad.exit_code == 2
