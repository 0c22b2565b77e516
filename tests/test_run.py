"""`vlq run`: stages end to end on the tiny LLaVA, reuse on re-run, the gate's exit code, the summary."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import typer.main
from typer.testing import CliRunner

import vlq.run
from vlq.cli import app
from vlq.errors import EXIT_GATE_FAILED, EXIT_INPUT, EXIT_USAGE, InputError
from vlq.recipe import load_recipe
from vlq.run import RAN, REUSED, SKIPPED, STATE_NAME, SUMMARY_JSON, SUMMARY_MD, run_recipe

#: The demo recipe's shape (tiny LLaVA, synthetic MMBench, every stage), made fast.
RECIPE = """\
description: test run
model: tiny:llava
stages: [quantize, export, eval, gate]
quantize:
  calib_samples: 4
  calib_seqlen: 32
  search_clip: false
  device: cpu
export:
  max_batch: 1
  device: cpu
eval:
  data: synthetic
  mode: logits
  limit: 4
  device: cpu
  max_drop: 50
"""
CACHED = ("quantize", "export", "eval-baseline", "eval-quantized")

runner = CliRunner()


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def first_run(recipe_file, tmp_path_factory):
    """One complete run; tests copy its folder (mtimes kept) and run again on the copy."""
    out = tmp_path_factory.mktemp("run") / "out"
    return run_recipe(load_recipe(recipe_file, out=str(out)))


@pytest.fixture
def run_copy(first_run, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(first_run.out_dir, copy)
    return copy


@pytest.fixture
def no_work(monkeypatch):
    """Any call of a stage's library function fails the test: a re-run must do no such work."""

    def forbidden(name):
        def call(*args, **kwargs):
            raise AssertionError(f"{name} was called")

        return call

    monkeypatch.setattr(vlq.run, "auto_awq", forbidden("auto_awq"))
    monkeypatch.setattr(vlq.run, "evaluate_mmbench", forbidden("evaluate_mmbench"))
    monkeypatch.setattr("vlq.export.exporter.export_vit", forbidden("export_vit"))


def _statuses(summary) -> dict[str, str]:
    return {s.name: s.status for s in summary.stages}


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_first_run_runs_every_stage_and_writes_the_summary(first_run):
    assert _statuses(first_run) == dict.fromkeys([*CACHED, "gate"], RAN)
    out = Path(first_run.out_dir)
    assert (out / "quantized" / "config.json").is_file() and (out / "vit" / "manifest.json").is_file()
    data = json.loads((out / SUMMARY_JSON).read_text())
    assert data["gate"]["passed"] is True and data["gate"]["max_drop"] == 50.0
    assert set(data["accuracy"]) == {"baseline", "quantized"}
    categories = set(data["accuracy"]["baseline"])
    assert "Overall" in categories and len(categories) > 2  # per category, not only Overall
    assert 0 < data["sizes"]["quantized"] < data["sizes"]["model_16bit"] and data["sizes"]["vit"] > 0
    assert data["settings"]["quantize"]["calib_samples"] == 4
    assert all(s["seconds"] > 0 for s in data["stages"] if s["name"] in CACHED)
    markdown = (out / SUMMARY_MD).read_text()
    assert markdown.startswith("## vlq run: test run")
    assert "**Accuracy gate passed**" in markdown
    assert "| | 16-bit | w4a16 g128 kv16 | change (points) |" in markdown
    for category in categories - {"Overall"}:
        assert f"| {category} |" in markdown
    for section in ("### Sizes", "### Stages", "| quantize | ran |", "| exported ViT |"):
        assert section in markdown
    state = json.loads((out / STATE_NAME).read_text())["stages"]
    assert set(state) == set(CACHED) and all(len(state[s]["fingerprint"]) == 16 for s in CACHED)


def test_rerun_reuses_every_stage_without_work(first_run, recipe_file, run_copy, no_work):
    summary = run_recipe(load_recipe(recipe_file, out=str(run_copy)))
    assert _statuses(summary) == {**dict.fromkeys(CACHED, REUSED), "gate": RAN}
    assert [s.fingerprint for s in summary.stages] == [s.fingerprint for s in first_run.stages]
    assert summary.accuracy == first_run.accuracy and summary.gate.passed


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means cuda here")
def test_device_auto_on_a_cpu_machine_is_the_same_run_as_cpu(recipe_file, run_copy, no_work):
    auto = ["quantize.device=auto", "export.device=auto", "eval.device=auto"]
    summary = run_recipe(load_recipe(recipe_file, auto, out=str(run_copy)))
    assert _statuses(summary) == {**dict.fromkeys(CACHED, REUSED), "gate": RAN}


def test_changing_the_gate_threshold_reruns_only_the_gate(recipe_file, run_copy, no_work):
    summary = run_recipe(load_recipe(recipe_file, ["eval.max_drop=0.5"], out=str(run_copy)))
    assert _statuses(summary) == {**dict.fromkeys(CACHED, REUSED), "gate": RAN}
    assert summary.gate.max_drop == 0.5


def test_changing_quantization_reruns_what_depends_on_it(recipe_file, run_copy, monkeypatch):
    evaluated = []
    real = vlq.run.evaluate_mmbench
    monkeypatch.setattr(
        vlq.run,
        "evaluate_mmbench",
        lambda options, **kw: evaluated.append(options.model) or real(options, **kw),
    )
    monkeypatch.setattr("vlq.export.exporter.export_vit", lambda *a, **k: pytest.fail("export re-ran"))
    summary = run_recipe(load_recipe(recipe_file, ["quantize.calib_samples=2"], out=str(run_copy)))
    statuses = _statuses(summary)
    assert statuses == {
        "quantize": RAN,
        "export": REUSED,
        "eval-baseline": REUSED,
        "eval-quantized": RAN,
        "gate": RAN,
    }
    assert evaluated == [str(run_copy / "quantized")]  # only the quantized model was evaluated again


def test_a_changed_checkpoint_is_quantized_again(recipe_file, run_copy):
    from vlq.run import PIPELINE, RunContext, fingerprint

    config = run_copy / "tiny-llava" / "config.json"
    ctx = RunContext(load_recipe(recipe_file), run_copy, str(config.parent), None, {})
    quantize = PIPELINE[0]
    before = fingerprint("quantize", quantize.settings(ctx), quantize.inputs(ctx))
    config.write_text(config.read_text() + " ")
    assert fingerprint("quantize", quantize.settings(ctx), quantize.inputs(ctx)) != before


def test_a_killed_quantization_is_resumed_not_reused(recipe_file, run_copy, monkeypatch):
    calls = []

    def killed(options, **kwargs):
        calls.append(options)
        raise KeyboardInterrupt

    monkeypatch.setattr(vlq.run, "auto_awq", killed)
    recipe = load_recipe(recipe_file, ["quantize.calib_samples=2"], out=str(run_copy))
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe)
    state = json.loads((run_copy / STATE_NAME).read_text())["stages"]
    assert state["quantize"]["complete"] is False  # the earlier complete output must not be reused now
    summary = json.loads((run_copy / SUMMARY_JSON).read_text())
    assert summary["stages"][0]["status"] == "failed"
    (run_copy / "quantized.partial").mkdir()
    (run_copy / "quantized.partial" / "vlq_state.json").write_text("{}")  # what auto_awq leaves when killed
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe)  # same settings: continue the partial output
    with pytest.raises(KeyboardInterrupt):
        run_recipe(
            load_recipe(recipe_file, ["quantize.calib_samples=3"], out=str(run_copy))
        )  # changed: start over
    assert [c.resume for c in calls] == [False, True, False]


def test_skipped_stage_without_earlier_output_fails_before_any_work(recipe_file, tmp_path):
    out = tmp_path / "fresh"
    result = _cli("run", recipe_file, "--out", out, "--skip", "quantize", "--skip", "export")
    assert result.exit_code == EXIT_INPUT, result.output
    assert "eval-quantized needs the output of quantize" in result.output
    assert not out.exists()  # nothing built, nothing written


def test_missing_export_packages_fail_before_quantization(recipe_file, tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real_find_spec(name, *a)
    )
    out = tmp_path / "fresh"
    result = _cli("run", recipe_file, "--out", out)
    assert result.exit_code == EXIT_INPUT, result.output
    assert "the recipe's export stage needs onnxscript: pip install 'vlq[export]'" in result.output
    assert not (out / "quantized").exists()


def test_skip_and_stages_select_what_runs(recipe_file, run_copy, no_work):
    summary = run_recipe(
        load_recipe(recipe_file, ["stages=[quantize, eval]"], out=str(run_copy)), skip=["quantize"]
    )
    assert _statuses(summary) == {
        "quantize": SKIPPED,
        "export": SKIPPED,
        "eval-baseline": REUSED,
        "eval-quantized": REUSED,
        "gate": SKIPPED,
    }
    assert summary.gate is None


def test_gate_failure_exits_4_and_still_writes_the_summary(recipe_file, run_copy, no_work):
    baseline = next((run_copy / "eval" / "baseline").glob("*_result.json"))
    data = json.loads(baseline.read_text())
    data["metrics"]["Overall"] = 1.0  # as if the 16-bit model had answered everything right
    baseline.write_text(json.dumps(data))
    result = _cli("run", recipe_file, "--out", run_copy, "--set", "eval.max_drop=5", "--quiet")
    assert result.exit_code == EXIT_GATE_FAILED, result.output
    assert "error: MMBench Overall dropped" in result.output and "(--max-drop 5)" in result.output
    assert "Traceback" not in result.output
    summary = json.loads((run_copy / SUMMARY_JSON).read_text())
    assert summary["gate"]["passed"] is False and summary["gate"]["drop_points"] > 5
    assert "**Accuracy gate FAILED**" in (run_copy / SUMMARY_MD).read_text()


def test_cli_json_is_the_summary(recipe_file, run_copy, no_work):
    result = _cli("run", recipe_file, "--out", run_copy, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {s["name"]: s["status"] for s in data["stages"]}["quantize"] == REUSED
    assert data["gate"]["passed"] is True and data["files"]["summary_md"].endswith(SUMMARY_MD)


def test_cli_quiet_is_one_line(recipe_file, run_copy, no_work):
    result = _cli("run", recipe_file, "--out", run_copy, "--quiet")
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1 and "passed" in result.output


def test_a_failing_stage_is_recorded_in_the_summary(recipe_file, run_copy, monkeypatch):
    def broken(*args, **kwargs):
        raise InputError("onnx export broke")

    monkeypatch.setattr("vlq.export.exporter.export_vit", broken)
    result = _cli("run", recipe_file, "--out", run_copy, "--set", "export.opset=18", "--quiet")
    assert result.exit_code == EXIT_INPUT and "error: onnx export broke" in result.output
    summary = json.loads((run_copy / SUMMARY_JSON).read_text())
    stages = {s["name"]: s for s in summary["stages"]}
    assert stages["quantize"]["status"] == REUSED and stages["export"]["status"] == "failed"
    assert stages["export"]["note"] == "onnx export broke" and summary["error"] == "onnx export broke"
    assert "**Run stopped**: onnx export broke" in (run_copy / SUMMARY_MD).read_text()


@pytest.mark.parametrize(
    "extra, code, fragment",
    [
        (
            ["--set", "quantize.w_bits=3"],
            EXIT_USAGE,
            "--set quantize.w_bits=3: quantize.w_bits 3 is not supported",
        ),
        (["--skip", "calibrate"], EXIT_USAGE, "--skip calibrate: stages are quantize, export, eval, gate"),
        (["--set", "eval.data=missing.tsv"], EXIT_INPUT, "eval.data missing.tsv does not exist"),
        (["--model", "no/such/folder"], EXIT_INPUT, "model no/such/folder does not exist"),
    ],
)
def test_cli_errors_are_one_line_with_their_exit_code(recipe_file, tmp_path, extra, code, fragment):
    result = _cli("run", recipe_file, "--out", tmp_path / "out", *extra)
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.output


def test_bad_recipe_file_names_the_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(RECIPE.replace("  calib_seqlen: 32", "  calib_seqlen: 32\n  calib_seqlens: 64"))
    result = _cli("run", recipe, "--out", tmp_path / "out")
    assert result.exit_code == EXIT_USAGE
    assert f"error: {recipe}:7: unknown key 'quantize.calib_seqlens'" in result.output.replace("\n", "")
    assert _cli("run", tmp_path / "nope.yaml").exit_code == EXIT_INPUT


def test_check_validates_without_work(recipe_file, tmp_path):
    result = _cli(
        "run", recipe_file, "--out", tmp_path / "out", "--check", "--json", "--set", "eval.kv_bits=8"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["eval"]["kv_bits"] == 8
    assert not (tmp_path / "out").exists()


def test_non_empty_out_without_a_run_needs_force(recipe_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("user data")
    result = _cli("run", recipe_file, "--out", out)
    assert result.exit_code == EXIT_INPUT and "--force" in result.output
    assert (out / "notes.txt").read_text() == "user data"


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


def test_no_command_ever_prompts():
    """CI jobs have no terminal: no option may prompt or ask for confirmation, no code may read stdin."""
    for name, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            assert not getattr(param, "prompt", None), f"vlq {name} {param.name} prompts"
    asking = re.compile(
        r"(?<![\w.])input\(|typer\.(prompt|confirm)\(|click\.(prompt|confirm)\(|"
        r"(Prompt|Confirm)\.ask\(|getpass\(|sys\.stdin\.read"
    )
    for source in Path(vlq.run.__file__).parent.rglob("*.py"):
        found = asking.search(source.read_text())
        assert found is None, f"{source.name} asks the user: {found.group(0)}"


def test_run_command_has_the_ci_options():
    command = typer.main.get_command(app).commands["run"]
    options = {opt for param in command.params for opt in param.opts}
    assert {"--json", "--quiet", "--set", "--model", "--out", "--skip", "--force", "--check"} <= options
    assert all(param.help for param in command.params if param.opts[0].startswith("--"))
