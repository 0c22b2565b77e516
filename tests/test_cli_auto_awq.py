"""The CLI: help, bad input as one-line errors with distinct exit codes, and no output left behind."""

import json

import pytest
from typer.testing import CliRunner

from vlq.cli import app
from vlq.errors import EXIT_INPUT, EXIT_USAGE

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_explains_every_option():
    result = _run("auto-awq", "--help")
    assert result.exit_code == 0
    for option in ("--calib-dataset", "--calib-samples", "--calib-seqlen", "--batch-size", "--w-bits",
                   "--w-group-size", "--search-scale", "--search-clip", "--work-dir", "--device", "--dtype",
                   "--force", "--seed", "--quiet", "--json"):
        assert option in result.output, option
    assert _run("--help").exit_code == 0


def _assert_one_line_error(result, code, fragment, out=None):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    if out is not None:
        assert not out.exists()
        assert not list(out.parent.glob(f".{out.name}.partial-*"))


def test_missing_model_folder(tmp_path):
    out = tmp_path / "out"
    _assert_one_line_error(_run("auto-awq", tmp_path / "nope", "--work-dir", out), EXIT_INPUT, "does not exist", out)


def test_folder_that_is_no_model(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    _assert_one_line_error(_run("auto-awq", tmp_path / "empty", "--work-dir", out), EXIT_INPUT, "no config.json", out)


def test_group_size_that_does_not_divide(tiny_llava, tmp_path):
    out = tmp_path / "out"
    result = _run("auto-awq", tiny_llava, "--work-dir", out, "--w-group-size", "96", "--calib-samples", "2",
                  "--calib-seqlen", "16", "--device", "cpu")
    _assert_one_line_error(result, EXIT_INPUT, "does not divide in_features 128", out)


def test_unsupported_bits(tiny_llava, tmp_path):
    out = tmp_path / "out"
    _assert_one_line_error(_run("auto-awq", tiny_llava, "--work-dir", out, "--w-bits", "3"), EXIT_USAGE, "--w-bits 3", out)


@pytest.mark.parametrize("content", [b"\xff\xfe\xfa not utf-8", None])
def test_unreadable_calibration_file(tiny_llava, tmp_path, content):
    calib = tmp_path / "calib.txt"
    if content is not None:
        calib.write_bytes(content)
    out = tmp_path / "out"
    result = _run("auto-awq", tiny_llava, "--work-dir", out, "--calib-dataset", calib, "--device", "cpu")
    _assert_one_line_error(result, EXIT_INPUT, "calib", out)


def test_non_empty_work_dir_needs_force(tiny_llava, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    result = _run("auto-awq", tiny_llava, "--work-dir", out)
    assert result.exit_code == EXIT_INPUT and "--force" in result.output
    assert (out / "keep.txt").read_text() == "user data"


def test_json_output_and_quiet_run(tiny_llava, tmp_path):
    out = tmp_path / "out"
    result = _run("auto-awq", tiny_llava, "--work-dir", out, "--calib-samples", "4", "--calib-seqlen", "32",
                  "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["family"] == "llava" and len(report["layers"]) == 2
    assert (out / "config.json").is_file()


def test_inspect_shows_groups(tiny_llava):
    result = _run("inspect", tiny_llava, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["family"] == "llava" and report["num_layers"] == 2
    groups = {g["prev"]: g["linears"] for g in report["scale_groups"]}
    assert groups["input_layernorm"] == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
    assert groups["mlp.up_proj"] == ["mlp.down_proj"]
    assert "self_attn.v_proj" not in groups  # GQA: v_proj has fewer outputs than o_proj has inputs
    assert report["bytes_quantized"] < report["bytes_16bit"]


def test_generate_on_quantized_folder(quantized_llava):
    result = _run("generate", quantized_llava.output_dir, "--prompt", "the company", "--max-new-tokens", "4",
                  "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["quantized"] is True and data["new_tokens"] == 4
