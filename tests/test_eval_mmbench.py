"""`vlq eval mmbench` end to end: tiny generated LLaVA, synthetic MMBench TSVs, the CLI and its exit codes."""

import json
import sys

import pytest
from typer.testing import CliRunner

from vlq.cli import app
from vlq.errors import UsageError
from vlq.eval.cache import Prediction
from vlq.eval.mmbench import MmbenchOptions, evaluate_mmbench
from vlq.eval.mmbench_data import file_md5, load_mcq_tsv
from vlq.eval.outputs import write_predictions_tsv
from vlq.eval.synth import synth_mmbench


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synth_mmbench(tmp_path_factory.mktemp("data") / "MMBench_SYN.tsv", questions=6, seed=0)


def options(model, data, out, **kwargs):
    return MmbenchOptions(model=str(model), data=str(data), out=str(out), device="cpu", **kwargs)


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_logits_mode_writes_result_files_and_is_batch_invariant(tiny_llava, synth, tmp_path):
    result = evaluate_mmbench(options(tiny_llava, synth, tmp_path / "b4", mode="logits", batch_size=4))
    files = {
        kind: tmp_path / "b4" / name
        for kind, name in [
            ("predictions", "MMBench_SYN_predictions.tsv"),
            ("acc", "MMBench_SYN_acc.csv"),
            ("result", "MMBench_SYN_result.json"),
            ("cache", "MMBench_SYN_cache.jsonl"),
        ]
    }
    assert {k: str(v) for k, v in files.items()} == result.files
    assert all(path.is_file() for path in files.values())
    saved = json.loads(files["result"].read_text())
    assert saved["model"] == str(tiny_llava) and saved["quantized"] is False
    assert saved["kv_bits"] == 16 and saved["mode"] == "logits" and saved["limit"] is None
    assert saved["data_md5"] == file_md5(synth)
    rows = load_mcq_tsv(synth).rows
    assert saved["counts"]["rows"] == len(rows) and saved["counts"]["questions"] == 6
    assert set(saved["metrics"]) >= {"Overall"} and 0.0 <= saved["metrics"]["Overall"] <= 1.0
    assert saved["timing"]["total_s"] > 0 and saved["unmatched"] == 0
    for row in saved["rows"]:
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["choice"] == max(row["probs"], key=row["probs"].get) == row["prediction"]
    assert files["acc"].read_text().startswith('"split","Overall",')
    assert files["predictions"].read_text().splitlines()[0].endswith('"prediction"')

    one = evaluate_mmbench(options(tiny_llava, synth, tmp_path / "b1", mode="logits", batch_size=1, limit=2))
    padded = {row["index"]: row["probs"] for row in result.rows}
    for row in one.rows:  # left padding must not change the answer
        assert row["probs"] == pytest.approx(padded[row["index"]], abs=1e-4)


def test_generate_mode_and_rescoring_its_predictions_file(tiny_llava, synth, tmp_path):
    run = evaluate_mmbench(
        options(tiny_llava, synth, tmp_path / "gen", limit=2, max_new_tokens=4, batch_size=3)
    )
    assert run.counts["questions"] == 2 and run.counts["rows"] == len([r for r in run.rows])
    assert all(r["probs"] is None for r in run.rows)
    # random weights answer gibberish: unmatched, counted wrong, and reported with examples
    assert run.unmatched == sum(r["choice"] is None for r in run.rows)
    assert len(run.unmatched_examples) == min(run.unmatched, 5)

    rescored = evaluate_mmbench(
        MmbenchOptions(predictions=run.files["predictions"], out=str(tmp_path / "re"))
    )
    assert rescored.metrics == run.metrics and rescored.metrics_vanilla == run.metrics_vanilla
    assert [r["choice"] for r in rescored.rows] == [r["choice"] for r in run.rows]
    assert rescored.quantized is None and "predictions" not in rescored.files


class FakeRunner:
    """The model protocol without a model: answers option A, can fail after some batches."""

    def __init__(self, fail_after=None):
        self.fail_after = fail_after
        self.batches = 0
        self.asked = []

    def prepare(self, items):
        assert all(
            item.image.mode == "RGB" and item.prompt.startswith(("Hint", "Question")) for item in items
        )
        return list(items)

    def answer(self, batch):
        self.batches += 1
        if self.fail_after is not None and self.batches > self.fail_after:
            raise KeyboardInterrupt
        self.asked += batch
        return [f"The answer is {item.letters[0]}." for item in batch]

    def option_probs(self, batch):
        self.answer(batch)
        return [{letter: 1.0 if letter == "A" else 0.0 for letter in item.letters} for item in batch]


def test_an_interrupted_run_resumes_from_its_cache(synth, tmp_path):
    total = len(load_mcq_tsv(synth).rows)
    first = FakeRunner(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate_mmbench(options("fake-model", synth, tmp_path, batch_size=3), runner=first)
    cache = tmp_path / "MMBench_SYN_cache.jsonl"
    assert len(cache.read_text().splitlines()) == 6 == len(first.asked)
    with cache.open("a") as handle:  # a line cut short by the crash
        handle.write('{"key": "trunc')
    second = FakeRunner()
    progress = []
    result = evaluate_mmbench(
        options("fake-model", synth, tmp_path, batch_size=3),
        runner=second,
        on_progress=lambda done, n: progress.append((done, n)),
    )
    assert len(second.asked) == total - 6
    assert result.counts["reused_from_cache"] == 6 and result.counts["rows"] == total
    assert progress[0] == (6, total) and progress[-1] == (total, total)
    assert all(r["choice"] == "A" for r in result.rows)
    # everything cached now: no model needed at all
    third = FakeRunner()
    again = evaluate_mmbench(options("fake-model", synth, tmp_path, batch_size=3), runner=third)
    assert (
        third.asked == [] and again.counts["reused_from_cache"] == total and again.metrics == result.metrics
    )
    # other settings never reuse the cache
    fourth = FakeRunner()
    evaluate_mmbench(options("fake-model", synth, tmp_path, batch_size=3, max_new_tokens=5), runner=fourth)
    assert len(fourth.asked) == total
    # nor another kind of device, which decides the compute dtype of `--dtype auto`
    fifth = FakeRunner()
    on_gpu = MmbenchOptions(model="fake-model", data=str(synth), out=str(tmp_path), device="cuda", batch_size=3)
    evaluate_mmbench(on_gpu, runner=fifth)
    assert len(fifth.asked) == total


def test_an_unknown_device_is_a_usage_error(synth, tmp_path):
    result = cli("eval", "mmbench", "fake-model", "--data", synth, "--out", tmp_path, "--device", "gpu")
    assert result.exit_code == 2 and "--device gpu: use auto, cpu, cuda or cuda:N" in result.output


def _predictions_file(synth, path, right: bool):
    data = load_mcq_tsv(synth)

    def wrong(row):
        return next(letter for letter in row.options if letter != row.answer)

    predictions = {r.index: Prediction(r.index, f"({r.answer if right else wrong(r)})") for r in data.rows}
    write_predictions_tsv(path, data.columns, data.rows, predictions)
    return path


def test_gate_through_the_cli(synth, tmp_path):
    good = _predictions_file(synth, tmp_path / "good.tsv", right=True)
    bad = _predictions_file(synth, tmp_path / "bad.tsv", right=False)
    made = cli("eval", "mmbench", "--predictions", good, "--out", tmp_path / "base", "--quiet")
    assert made.exit_code == 0, made.output
    baseline = tmp_path / "base" / "good_result.json"
    assert json.loads(baseline.read_text())["metrics"]["Overall"] == 1.0

    failed = cli(
        "eval",
        "mmbench",
        "--predictions",
        bad,
        "--baseline",
        baseline,
        "--max-drop",
        "1.0",
        "--out",
        tmp_path / "bad",
    )
    assert failed.exit_code == 4, failed.output
    assert "dropped 100.00 points" in failed.output
    written = json.loads((tmp_path / "bad" / "bad_result.json").read_text())  # results are written first
    assert written["baseline"]["passed"] is False and written["baseline"]["agreement"] == 0.0

    passed = cli(
        "eval",
        "mmbench",
        "--predictions",
        good,
        "--baseline",
        baseline,
        "--max-drop",
        "1.0",
        "--out",
        tmp_path / "good",
        "--json",
    )
    assert passed.exit_code == 0, passed.output
    report = json.loads(passed.stdout)
    assert report["baseline"]["passed"] is True and report["baseline"]["agreement"] == 1.0
    assert "rows" not in report


def test_logits_run_gated_against_itself_through_the_cli(tiny_llava, synth, tmp_path):
    first = cli(
        "eval",
        "mmbench",
        tiny_llava,
        "--data",
        synth,
        "--mode",
        "logits",
        "--limit",
        "2",
        "--out",
        tmp_path / "a",
        "--device",
        "cpu",
    )
    assert first.exit_code == 0, first.output
    assert "Overall" in first.stdout
    again = cli(
        "eval",
        "mmbench",
        tiny_llava,
        "--data",
        synth,
        "--mode",
        "logits",
        "--limit",
        "2",
        "--out",
        tmp_path / "b",
        "--device",
        "cpu",
        "--baseline",
        tmp_path / "a" / "MMBench_SYN_result.json",
        "--max-drop",
        "0",
        "--json",
    )
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["baseline"]["agreement"] == 1.0 and report["baseline"]["mean_kl"] == pytest.approx(
        0.0, abs=1e-6
    )


def test_test_split_gives_predictions_only(synth, tmp_path):
    test = synth_mmbench(tmp_path / "MMBench_TEST_SYN.tsv", questions=3, answers=False, split="test")
    result = evaluate_mmbench(options("fake-model", test, tmp_path / "out"), runner=FakeRunner())
    assert not result.scored and result.metrics is None and "acc" not in result.files
    assert any("no answers" in note for note in result.notes)
    assert (tmp_path / "out" / "MMBench_TEST_SYN_predictions.tsv").is_file()
    gated = cli(
        "eval", "mmbench", "fake-model", "--data", test, "--baseline", tmp_path / "x.json", "--max-drop", "1"
    )
    assert gated.exit_code == 3  # the baseline is checked first: it does not exist
    base = tmp_path / "out" / "MMBench_TEST_SYN_result.json"
    no_scores = cli(
        "eval",
        "mmbench",
        "--predictions",
        tmp_path / "out" / "MMBench_TEST_SYN_predictions.tsv",
        "--baseline",
        base,
        "--max-drop",
        "1",
    )
    assert no_scores.exit_code == 3 and "no scores" in no_scores.output


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["eval", "mmbench", "some-model"], 2, "--data"),
        (["eval", "mmbench"], 2, "MODEL or --predictions"),
        (["eval", "mmbench", "m", "--data", "nowhere/MMBench_DEV_EN.tsv"], 3, "does not exist"),
        (["eval", "mmbench", "m", "--data", "d.tsv", "--max-drop", "1"], 2, "--baseline"),
        (["eval", "mmbench", "m", "--data", "d.tsv", "--mode", "judge"], 2, "--mode judge"),
        (["eval", "mmbench", "m", "--data", "d.tsv", "--kv-bits", "3"], 2, "--kv-bits 3"),
        (["eval", "mmbench", "--predictions", "p.tsv", "--kv-bits", "8"], 2, "--predictions only scores"),
    ],
)
def test_usage_and_input_errors(tmp_path, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    outcome = cli(*args)
    assert outcome.exit_code == code, outcome.output
    assert message in outcome.output


def test_kv_bits_without_the_kv_module_is_a_usage_error(synth, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vlq.kv", None)
    outcome = cli("eval", "mmbench", "fake-model", "--data", synth, "--kv-bits", "8", "--out", tmp_path)
    assert outcome.exit_code == 2 and "vlq.kv" in outcome.output
    with pytest.raises(UsageError):
        evaluate_mmbench(options("fake-model", synth, tmp_path, kv_bits=4), runner=FakeRunner())


def test_quantized_kv_cache_reaches_both_modes(tiny_llava, synth, tmp_path):
    pytest.importorskip("vlq.kv")

    def probs(kv_bits, batch_size):
        run = evaluate_mmbench(
            options(
                tiny_llava,
                synth,
                tmp_path / f"{kv_bits}-{batch_size}",
                mode="logits",
                limit=2,
                kv_bits=kv_bits,
                batch_size=batch_size,
            )
        )
        return {row["index"]: row["probs"] for row in run.rows}

    exact, kv4, kv4_batched = probs(16, 4), probs(4, 1), probs(4, 4)
    # the last prompt token reads the int4 cache: the letter probabilities move, a little
    moved = max(abs(kv4[i][letter] - exact[i][letter]) for i in exact for letter in exact[i])
    assert 1e-6 < moved < 0.05
    # left padding goes through the cache too; batched float noise may flip an int4 code or two
    for index, row in kv4_batched.items():
        assert row == pytest.approx(kv4[index], abs=1e-3)
    gen = evaluate_mmbench(options(tiny_llava, synth, tmp_path / "g8", limit=1, kv_bits=8, max_new_tokens=4))
    assert gen.kv_bits == 8 and gen.counts["rows"] == len(gen.rows) > 0


def test_quantized_checkpoint_is_recorded_as_w4a16(quantized_llava, synth, tmp_path):
    result = evaluate_mmbench(options(quantized_llava.output_dir, synth, tmp_path, mode="logits", limit=2))
    assert result.quantized is True
    assert json.loads((tmp_path / "MMBench_SYN_result.json").read_text())["quantized"] is True


def test_option_letter_tokens_cover_both_spellings(tiny_llava):
    from transformers import AutoTokenizer

    from vlq.eval.runner import letter_token_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_llava)
    ids = letter_token_ids(tokenizer, "USER: <image>\nQuestion: which?\nASSISTANT:", ("A", "B", "C"))
    assert set(ids) == {"A", "B", "C"}
    for letter, found in ids.items():
        assert tokenizer.encode(letter, add_special_tokens=False)[0] in found
        assert tokenizer.encode(" " + letter, add_special_tokens=False)[0] in found
    assert len({t for found in ids.values() for t in found}) == sum(len(found) for found in ids.values())
