"""Recipes: one-line errors naming key and line, --set precedence, shipped recipes and the CI example."""

import dataclasses
import shlex
from pathlib import Path

import pytest
import typer.main
import yaml

from vlq.errors import InputError, UsageError
from vlq.recipe import (
    STAGES,
    EvalSection,
    ExportSection,
    QuantizeSection,
    Recipe,
    apply_overrides,
    load_recipe,
    parse_recipe_text,
    schema_help,
    validate_recipe,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
WORKFLOW = ROOT / "docs" / "github-actions-quantize.yml"

GOOD = """\
model: ./ckpt
stages: [quantize, eval, gate]
quantize:
  calib_samples: 16
  w_group_size: 64
eval:
  data: mmbench.tsv
  kv_bits: 8
  max_drop: 1
"""


def _validate(text: str, overrides=()) -> Recipe:
    return validate_recipe(apply_overrides(parse_recipe_text(text, "r.yaml"), overrides), "r.yaml")


def _error(text: str, overrides=()) -> str:
    with pytest.raises(UsageError) as info:
        _validate(text, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_recipe_values_and_defaults():
    recipe = _validate(GOOD)
    assert recipe.model == "./ckpt" and recipe.stages == ("quantize", "eval", "gate")
    assert recipe.quantize.calib_samples == 16 and recipe.quantize.w_group_size == 64
    assert recipe.quantize.calib_seqlen == QuantizeSection().calib_seqlen  # untouched keys keep defaults
    assert recipe.eval.max_drop == 1.0 and isinstance(recipe.eval.max_drop, float)
    assert recipe.export == ExportSection()


def test_unknown_key_names_key_and_line_with_suggestion():
    message = _error(GOOD.replace("  calib_samples: 16", "  calib_sample: 16"))
    assert message.startswith("r.yaml:4: unknown key 'quantize.calib_sample'")
    assert "did you mean 'calib_samples'" in message


def test_unknown_top_level_key_and_section():
    assert _error("model: x\nquantise:\n  w_bits: 4\n").startswith(
        "r.yaml:2: unknown key 'quantise' (did you mean 'quantize'?)"
    )
    assert _error("model: x\nstages: [quantize, export, evaluate]\n").startswith(
        "r.yaml:2: stages: unknown stage 'evaluate'"
    )


@pytest.mark.parametrize(
    "line, expected",
    [
        ("  calib_samples: many", "r.yaml:4: quantize.calib_samples must be an integer, got string 'many'"),
        ("  calib_samples: true", "r.yaml:4: quantize.calib_samples must be an integer, got boolean True"),
        ("  calib_samples: 1.5", "r.yaml:4: quantize.calib_samples must be an integer, got number 1.5"),
        ("  calib_samples: 0", "r.yaml:4: quantize.calib_samples must be at least 1, got 0"),
        ("  search_scale: 1", "r.yaml:4: quantize.search_scale must be a boolean, got integer 1"),
        ("  dtype: fp16", "r.yaml:4: quantize.dtype 'fp16' is not supported; use auto, float16 or bfloat16"),
    ],
)
def test_wrong_types_and_values(line, expected):
    assert _error(GOOD.replace("  calib_samples: 16", line)) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            GOOD.replace("  w_group_size: 64", "  w_bits: 3"),
            "r.yaml:5: quantize.w_bits 3 is not supported; use 4",
        ),
        (
            GOOD.replace("kv_bits: 8", "kv_bits: 5"),
            "r.yaml:8: eval.kv_bits 5 is not supported; use 16, 8 or 4",
        ),
        (GOOD.replace("[quantize, eval, gate]", "[quantize, gate]"), "r.yaml:2: stages: gate needs eval"),
        (GOOD.replace("  max_drop: 1\n", ""), "r.yaml:6: stages include gate but eval.max_drop is not set"),
        (GOOD.replace("  data: mmbench.tsv\n", ""), "r.yaml:6: stages include eval but eval.data is not set"),
        (
            GOOD.replace("  w_group_size: 64", "  w_group_size: 100"),
            "r.yaml:5: quantize.w_group_size 100 must be a multiple of 8",
        ),
        (
            GOOD + "export:\n  max_batch: 2\n  opt_batch: 4\n",
            "r.yaml:12: export.opt_batch 4 is above export.max_batch 2",
        ),
        (GOOD + "export:\n  image_sizes: [896, 448, 224]\n", "r.yaml:11: export.image_sizes [896, 448, 224]"),
        (GOOD + "export:\n  trt: true\n  device: cpu\n", "r.yaml:11: export.trt needs a CUDA device"),
        (GOOD + "export:\n  opset: 30\n", "r.yaml:11: export.opset must be at most 21"),
        (
            GOOD.replace("  kv_bits: 8", "  device: tpu"),
            "r.yaml:8: eval.device 'tpu': use auto, cuda, cuda:N or cpu",
        ),
    ],
)
def test_impossible_combinations(text, expected):
    assert _error(text).startswith(expected)


def test_gate_without_eval_is_fine_when_gate_is_not_run():
    recipe = _validate(
        GOOD.replace("[quantize, eval, gate]", "[quantize, export]").replace("  data: mmbench.tsv\n", "")
    )
    assert recipe.stages == ("quantize", "export")


def test_syntax_errors_duplicates_and_shapes_name_the_line():
    assert _error("model: x\nquantize:\n  w_bits: [4\n").startswith("r.yaml:")
    assert _error("model: x\nquantize:\n  seed: 1\n  seed: 2\n") == "r.yaml:4: duplicate key 'quantize.seed'"
    assert _error("- a\n- b\n").startswith("r.yaml:1: a recipe is a mapping")
    assert _error("model: x\nquantize: 4\n").startswith("r.yaml:2: quantize must be a mapping")
    assert _validate("stages: [quantize]") == Recipe(
        stages=("quantize",), source="r.yaml"
    )  # the rest: defaults
    assert "eval.max_drop is not set" in _error("")  # all stages by default, and the gate needs a threshold


def test_stages_run_in_pipeline_order():
    assert _validate("stages: [gate, eval, quantize]\neval: {data: d.tsv, max_drop: 1}\n").stages == (
        "quantize",
        "eval",
        "gate",
    )
    assert "listed twice" in _error("stages: [quantize, quantize]\n")


def test_set_overrides_win_over_recipe_and_are_validated():
    recipe = _validate(
        GOOD,
        [
            "quantize.calib_samples=4",
            "quantize.search_scale=true",
            "eval.limit=3",
            "stages=[quantize, eval]",
            "export.image_sizes=[224, 448, 896]",
        ],
    )
    assert recipe.quantize.calib_samples == 4 and recipe.quantize.search_scale is True
    assert recipe.eval.limit == 3 and recipe.stages == ("quantize", "eval")
    assert recipe.export.image_sizes == [224, 448, 896]
    assert recipe.quantize.w_group_size == 64  # untouched recipe value stays
    assert (
        _error(GOOD, ["quantize.w_bits=3"])
        == "--set quantize.w_bits=3: quantize.w_bits 3 is not supported; use 4"
    )
    assert _error(GOOD, ["quantize.calib_sample=3"]).startswith("--set quantize.calib_sample=3: unknown key")
    assert _error(GOOD, ["eval.kv_bits=true"]).startswith(
        "--set eval.kv_bits=true: eval.kv_bits must be an integer"
    )
    assert "use --set key=value" in _error(GOOD, ["quantize.calib_samples"])


def test_precedence_defaults_recipe_set_flags(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD + "out: from-recipe\n")
    recipe = load_recipe(
        path, ["quantize.calib_seqlen=64", "model=from-set"], model="from-flag", out="from-flag-out"
    )
    assert recipe.quantize.calib_seqlen == 64  # --set beats the default
    assert recipe.quantize.calib_samples == 16  # the recipe beats the default
    assert recipe.model == "from-flag" and recipe.out == "from-flag-out"  # flags beat recipe and --set
    assert load_recipe(path, ["model=from-set"]).model == "from-set"


def test_missing_recipe_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate_and_are_documented(path):
    recipe = load_recipe(path)
    assert recipe.stages == STAGES and recipe.eval.max_drop is not None and recipe.model
    text = path.read_text()
    assert text.startswith("# vlq recipe:") and f"vlq run recipes/{path.name}" in text


def test_the_families_of_the_issue_have_recipes():
    names = {p.name for p in RECIPES}
    assert {
        "demo.yaml",
        "llava-1.5-7b-w4a16.yaml",
        "qwen2-vl-7b-w4a16.yaml",
        "mini-internvl-chat-2b-w4a16-kv4.yaml",
        "internlm-xcomposer2-w4a16.yaml",
    } <= names
    assert load_recipe(ROOT / "recipes" / "mini-internvl-chat-2b-w4a16-kv4.yaml").eval.kv_bits == 4


@pytest.mark.parametrize(
    "section, options_module, options_class, renamed",
    [
        (QuantizeSection, "vlq.awq.pipeline", "AutoAwqOptions", {}),
        (ExportSection, "vlq.export.exporter", "ExportOptions", {}),
        (EvalSection, "vlq.eval.mmbench", "MmbenchOptions", {}),
    ],
)
def test_section_keys_are_the_library_options(section, options_module, options_class, renamed):
    """One to one: same names and same defaults as the options dataclass the stage calls."""
    import importlib

    options = getattr(importlib.import_module(options_module), options_class)
    library = {f.name: f.default for f in dataclasses.fields(options)}
    for f in dataclasses.fields(section):
        assert f.name in library, f"{section.__name__}.{f.name} is not an option of {options_class}"
        if f.name not in ("out", "data"):  # run-relative paths
            assert f.default == library[f.name], (
                f"{f.name}: recipe default {f.default!r} != {library[f.name]!r}"
            )


@pytest.mark.parametrize(
    "section, command",
    [(QuantizeSection, ["auto-awq"]), (ExportSection, ["export-vit"]), (EvalSection, ["eval", "mmbench"])],
)
def test_section_keys_are_the_command_line_options(section, command):
    from vlq.cli import app

    group = typer.main.get_command(app)
    for name in command:
        group = group.commands[name]
    options = {opt for param in group.params for opt in param.opts}
    for f in dataclasses.fields(section):
        assert "--" + f.name.replace("_", "-") in options, f"vlq {' '.join(command)} has no --{f.name}"


def test_schema_help_lists_every_key():
    keys = {row[0] for row in schema_help()}
    assert {"model", "stages", "quantize.w_bits", "export.image_sizes", "eval.max_drop"} <= keys
    assert all(row[3] for row in schema_help())  # every key explained


def test_demo_recipe_file_matches_the_built_in_demo():
    from vlq.run import demo_recipe

    from_file = load_recipe(ROOT / "recipes" / "demo.yaml")
    built_in = dataclasses.replace(demo_recipe(device="auto"), out=None)
    assert from_file == built_in


# --- the example CI workflow ------------------------------------------------------------------


def _vlq_invocations(script: str) -> list[list[str]]:
    """Every `vlq ...` command in a shell script: continuation lines joined, split at ; && || | and do."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in (";", "&&", "||", "|", "&", "do", "then", "(", ")"):
                if current and current[0] == "vlq":
                    commands.append(current[1:])
                current = []
            else:
                current.append(token)
    return commands


def test_ci_workflow_is_valid_and_calls_real_vlq_commands():
    from vlq.cli import app

    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert {"name", "jobs"} <= set(workflow) and (
        True in workflow or "on" in workflow
    )  # YAML 1.1 reads `on` as True
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert all("uses" in step or "run" in step for step in steps)
    root = typer.main.get_command(app)
    invocations = [args for step in steps if "run" in step for args in _vlq_invocations(step["run"])]
    assert [args[0] for args in invocations] == ["run", "run"]
    for args in invocations:
        command, rest = root, list(args)
        while hasattr(command, "commands"):  # a group (typer vendors its own click: no isinstance)
            name = rest.pop(0)
            assert name in command.commands, f"vlq has no command {name!r}"
            command = command.commands[name]
        known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        for token in rest:
            if token.startswith("--"):
                assert token.split("=")[0] in known, f"vlq {args[0]} has no option {token}"
    uploads = [step for step in steps if "upload-artifact" in step.get("uses", "")]
    gated = [step for step in uploads if "quantized" in step["with"]["path"]]
    assert gated and all("if" not in step for step in gated)  # the model ships only when vlq exited 0
