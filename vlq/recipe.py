"""Recipes: a YAML file under version control that says how one checkpoint is quantized and checked.

A recipe has a section per stage whose keys are, one to one, the options of the command that
stage runs (`quantize:` = `vlq auto-awq`, `export:` = `vlq export-vit`, `eval:` = `vlq eval
mmbench`), so what works on the command line works in a recipe and back. Precedence: the defaults
below < the recipe < `--set section.key=value` and the `--model` / `--out` flags.

Everything is checked before any work starts, and every mistake is one line naming the key and
where it came from (`recipe.yaml:12` or `--set ...`): CI should fail in a second on a typo, not
after an hour of calibration. Line numbers come from PyYAML's node tree (`yaml.compose`), which
also catches duplicate keys that `yaml.safe_load` would silently merge.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from vlq.errors import InputError, UsageError

#: Stage names, in the order they run; `stages:` and `--skip` use them.
STAGES = ("quantize", "export", "eval", "gate")
SUPPORTED_W_BITS = (4,)
SUPPORTED_KV_BITS = (16, 8, 4)
#: `model:` values that name a checkpoint vlq generates itself (`vlq.tiny`), no download needed.
TINY_PREFIX = "tiny:"
#: `eval.data:` value that makes the run write a small synthetic MMBench TSV (`vlq.eval.synth`).
SYNTHETIC_DATA = "synthetic"
#: `model:` / `eval.data:` value naming the trained reference VLM and its held-out set (`vlq.reference`).
REFERENCE = "reference"


def _opt(
    default: Any,
    help: str,
    choices: tuple | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A schema field: its default, what it means, and the values it accepts."""
    return field(
        default=default, metadata={"help": help, "choices": choices, "minimum": minimum, "maximum": maximum}
    )


@dataclass(frozen=True)
class QuantizeSection:
    """`vlq auto-awq` options (same names, same defaults: a test holds them to `AutoAwqOptions`)."""

    calib_dataset: str = _opt("ptb", "ptb, wikitext2, c4, pileval, or a .txt/.jsonl file")
    calib_samples: int = _opt(128, "number of calibration samples", minimum=1)
    calib_seqlen: int = _opt(2048, "tokens per calibration sample", minimum=1)
    batch_size: int = _opt(1, "samples per forward chunk", minimum=1)
    w_bits: int = _opt(4, "weight bits (AutoAWQ's GEMM format holds 4)", choices=SUPPORTED_W_BITS)
    w_group_size: int = _opt(128, "input channels per quantization group (multiple of 8)", minimum=8)
    search_scale: bool = _opt(False, "AWQ grid search of the scale exponent")
    search_clip: bool = _opt(True, "search per-group clipping thresholds")
    device: str = _opt("auto", "auto, cuda, cuda:N or cpu")
    dtype: str = _opt("auto", "auto, float16 or bfloat16", choices=("auto", "float16", "bfloat16"))
    seed: int = _opt(0, "calibration sampling seed", minimum=0)


@dataclass(frozen=True)
class ExportSection:
    """`vlq export-vit` options: the vision tower + projector to ONNX, optionally a TensorRT engine.

    It exports from the 16-bit checkpoint: the vision path is never quantized, so the export does
    not depend on (or wait for) the quantize stage.
    """

    out: str = _opt("vit", "output folder; a relative path is inside the run's --out folder")
    dtype: str = _opt("fp32", "fp32 or fp16 (the ONNX graph's precision)", choices=("fp32", "fp16"))
    opset: int = _opt(17, "ONNX opset", minimum=14, maximum=21)
    max_batch: int = _opt(8, "most images per call the graph and engine accept", minimum=1)
    opt_batch: int = _opt(1, "batch TensorRT tunes for (at most max_batch)", minimum=1)
    image_sizes: str | list[int] | None = _opt(
        None,
        "[MIN, OPT, MAX] image sides in pixels, dynamic-resolution towers only; null: the family default",
    )
    trt: bool = _opt(False, "also build a TensorRT engine (needs tensorrt and a CUDA GPU)")
    workspace_gb: float = _opt(4.0, "TensorRT builder workspace (GiB)", minimum=0)
    timing_cache: str | None = _opt(None, "TensorRT timing cache file to reuse between builds")
    tolerance: float | None = _opt(
        None, "parity gate on max relative error (null: 1e-3 for fp32, 2e-2 for fp16)", minimum=0
    )
    device: str = _opt("auto", "auto, cuda, cuda:N or cpu: where the PyTorch reference and onnxruntime run")


@dataclass(frozen=True)
class EvalSection:
    """`vlq eval mmbench` options, run on the 16-bit baseline and on the quantized model."""

    data: str | None = _opt(
        None, f"MMBench-format TSV, '{REFERENCE}' (the reference VLM's held-out set) or '{SYNTHETIC_DATA}' (a small generated one)"
    )
    kv_bits: int = _opt(
        16, "KV cache bits of the quantized run (the baseline is all 16-bit)", SUPPORTED_KV_BITS
    )
    limit: int | None = _opt(None, "evaluate only the first N questions (all: null)", minimum=1)
    batch_size: int = _opt(8, "questions per forward pass", minimum=1)
    mode: str = _opt(
        "generate",
        "generate (answer text) or logits (option-letter probabilities)",
        choices=("generate", "logits"),
    )
    max_new_tokens: int = _opt(32, "answer length in generate mode", minimum=1)
    device: str = _opt("auto", "auto, cuda, cuda:N or cpu")
    dtype: str = _opt("auto", "auto, float16 or bfloat16", choices=("auto", "float16", "bfloat16"))
    max_drop: float | None = _opt(
        None, "gate: most percentage points circular Overall may drop vs the 16-bit baseline", minimum=0
    )


SECTIONS: dict[str, type] = {"quantize": QuantizeSection, "export": ExportSection, "eval": EvalSection}


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: every value has its type and passed its checks."""

    model: str | None = None
    out: str | None = None
    description: str = ""
    stages: tuple[str, ...] = STAGES
    quantize: QuantizeSection = field(default_factory=QuantizeSection)
    export: ExportSection = field(default_factory=ExportSection)
    eval: EvalSection = field(default_factory=EvalSection)
    #: Where it was read from (for messages and the summary); not a recipe key.
    source: str = field(default="", compare=False)

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def to_dict(self) -> dict:
        """The recipe as YAML-able data (what the run summary records as "settings used")."""
        data: dict[str, Any] = {
            "model": self.model,
            "out": self.out,
            "description": self.description,
            "stages": list(self.stages),
        }
        for name in SECTIONS:
            section = self.section(name)
            data[name] = {f.name: getattr(section, f.name) for f in fields(section)}
        return data


_TOP_LEVEL = {
    "model": (str | None, "checkpoint folder or hub id, 'reference' (the shipped trained VLM) or tiny:llava (generated); --model overrides"),
    "out": (str | None, "run folder (outputs, summary.json, summary.md); --out overrides"),
    "description": (str, "free text shown at the top of summary.md"),
    "stages": (list[str], f"stages to run, in order: {', '.join(STAGES)}"),
}


# --- reading: YAML -> plain data + where each key came from ------------------------------------


class _Located(dict):
    """Plain recipe data plus `where[dotted key] -> "file:line"` for messages."""

    def __init__(self, data: dict, where: dict[str, str]):
        super().__init__(data)
        self.where = where


def _locate(node: yaml.Node, source: str, prefix: str, where: dict[str, str]) -> None:
    """Record the line of every mapping key; refuse duplicate keys (safe_load keeps the last silently)."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        here = f"{source}:{key_node.start_mark.line + 1}"
        if key in seen:
            raise UsageError(f"{here}: duplicate key {key!r}")
        seen.add(key)
        where[key] = here
        _locate(value_node, source, f"{key}.", where)


def parse_recipe_text(text: str, source: str = "<recipe>") -> _Located:
    """YAML text -> data and key locations. Syntax errors name the line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{source}{line}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(
            f"{source}:1: a recipe is a mapping of keys (model:, quantize:, ...), not a {_kind(data)}"
        )
    where: dict[str, str] = {}
    if root is not None:
        _locate(root, source, "", where)
    return _Located(data, where)


def read_recipe_file(path: str | Path) -> _Located:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"recipe {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read recipe {path}: {type(exc).__name__}: {exc}") from None
    return parse_recipe_text(text, str(path))


# --- overrides: --set key=value ------------------------------------------------------------------


def apply_overrides(raw: _Located, overrides: Sequence[str]) -> _Located:
    """Apply `section.key=value` strings (values read as YAML scalars/lists) on top of the recipe."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    where = dict(raw.where)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item!r}: use --set key=value, e.g. --set quantize.calib_samples=32")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text  # not YAML: take it as a plain string
        section, dot, name = key.partition(".")
        if dot:
            if not isinstance(data.get(section, {}), dict):
                raise UsageError(f"--set {item}: {section!r} is not a section")
            data[section] = {**(data.get(section) or {}), name: value}
        else:
            data[key] = value
        where[key] = f"--set {item}"
    return _Located(data, where)


# --- validation ----------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}s"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[annotation]


def _check_type(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_check_type(v, item) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _or(choices: Sequence) -> str:
    names = [str(c) for c in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _unknown(key: str, known: Sequence[str], where: str) -> UsageError:
    name = key.rpartition(".")[2]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
    return UsageError(f"{where}: unknown key {key!r}{hint}")


def _checked(key: str, value: Any, annotation: Any, meta: Mapping, where: str) -> Any:
    """The value if its type and range are right, else one error naming the key."""
    if not _check_type(value, annotation):
        name = _type_name(annotation)
        article = "an" if name[0] in "aeiou" else "a"
        raise UsageError(f"{where}: {key} must be {article} {name}, got {_kind(value)} {value!r}")
    if value is None:
        return value
    choices, minimum = meta.get("choices"), meta.get("minimum")
    if choices and value not in choices:
        raise UsageError(f"{where}: {key} {value!r} is not supported; use {_or(choices)}")
    maximum = meta.get("maximum")
    if isinstance(value, (int, float)) and minimum is not None and value < minimum:
        raise UsageError(f"{where}: {key} must be at least {minimum:g}, got {value!r}")
    if isinstance(value, (int, float)) and maximum is not None and value > maximum:
        raise UsageError(f"{where}: {key} must be at most {maximum:g}, got {value!r}")
    if isinstance(value, int) and float in (annotation, *typing.get_args(annotation)):
        return float(value)  # `max_drop: 1` means 1.0
    if isinstance(value, list):
        return list(value)
    return value


def _section(name: str, data: Any, where: dict[str, str], source: str) -> Any:
    cls = SECTIONS[name]
    here = where.get(name, source)
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise UsageError(f"{here}: {name} must be a mapping of options, got {_kind(data)} {data!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    values = {}
    for key, value in data.items():
        dotted = f"{name}.{key}"
        if key not in known:
            raise _unknown(dotted, known, where.get(dotted, here))
        meta = next(f.metadata for f in fields(cls) if f.name == key)
        values[key] = _checked(dotted, value, hints[key], meta, where.get(dotted, here))
    return cls(**values)


def validate_recipe(raw: _Located, source: str = "<recipe>") -> Recipe:
    """Plain data -> `Recipe`, or a `UsageError` naming the first bad key and its line."""
    where = raw.where
    known = list(_TOP_LEVEL) + list(SECTIONS)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        here = where.get(key, source)
        if key in SECTIONS:
            values[key] = _section(key, value, where, source)
        elif key in _TOP_LEVEL:
            annotation, _ = _TOP_LEVEL[key]
            values[key] = _checked(key, value, annotation, {}, here)
        else:
            raise _unknown(key, known, here)
    if "stages" in values:
        values["stages"] = _stages(values["stages"], where.get("stages", source))
    recipe = Recipe(**values, source=source)
    _check_combinations(recipe, where, source)
    return recipe


def _stages(names: list[str], here: str) -> tuple[str, ...]:
    for name in names:
        if name not in STAGES:
            close = difflib.get_close_matches(name, STAGES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{here}: stages: unknown stage {name!r}{hint}; stages are {', '.join(STAGES)}")
    if len(set(names)) != len(names):
        raise UsageError(f"{here}: stages: a stage is listed twice")
    return tuple(s for s in STAGES if s in names)  # always run in pipeline order


def _check_combinations(recipe: Recipe, where: dict[str, str], source: str) -> None:
    """What each key allows alone but not together."""
    q, e = recipe.quantize, recipe.eval
    if q.w_group_size % 8:
        raise UsageError(
            f"{where.get('quantize.w_group_size', source)}: quantize.w_group_size "
            f"{q.w_group_size} must be a multiple of 8 (usually 128)"
        )
    for key, device in (
        ("quantize.device", q.device),
        ("export.device", recipe.export.device),
        ("eval.device", e.device),
    ):
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise UsageError(f"{where.get(key, source)}: {key} {device!r}: use auto, cuda, cuda:N or cpu")
    stages_at = where.get("stages", source)
    if "gate" in recipe.stages and "eval" not in recipe.stages:
        raise UsageError(
            f"{stages_at}: stages: gate needs eval (it compares the two eval results); add eval or drop gate"
        )
    if "gate" in recipe.stages and e.max_drop is None:
        raise UsageError(
            f"{where.get('eval', stages_at)}: stages include gate but eval.max_drop is not set "
            "(percentage points Overall may drop)"
        )
    if "eval" in recipe.stages and not e.data:
        raise UsageError(
            f"{where.get('eval', stages_at)}: stages include eval but eval.data is not set "
            f"(an MMBench TSV, '{REFERENCE}' or '{SYNTHETIC_DATA}')"
        )
    x = recipe.export
    if x.opt_batch > x.max_batch:
        raise UsageError(
            f"{where.get('export.opt_batch', source)}: export.opt_batch {x.opt_batch} "
            f"is above export.max_batch {x.max_batch}"
        )
    if x.trt and x.device == "cpu":
        raise UsageError(
            f"{where.get('export.trt', source)}: export.trt needs a CUDA device, but export.device is cpu"
        )
    if x.image_sizes is not None:
        sizes = x.image_sizes if isinstance(x.image_sizes, list) else x.image_sizes.split(",")
        try:
            sizes = [int(v) for v in sizes]
        except ValueError:
            sizes = []
        if len(sizes) not in (1, 3) or sizes[0] <= 0 or sorted(sizes) != sizes:
            raise UsageError(
                f"{where.get('export.image_sizes', source)}: export.image_sizes {x.image_sizes!r}: "
                "use [MIN, OPT, MAX] ascending image sides in pixels, or one number"
            )


def load_recipe(
    path: str | Path,
    overrides: Sequence[str] = (),
    model: str | None = None,
    out: str | None = None,
) -> Recipe:
    """Read, override and validate a recipe file. `model`/`out` are the `--model`/`--out` flags."""
    raw = apply_overrides(read_recipe_file(path), overrides)
    recipe = validate_recipe(raw, str(path))
    return with_flags(recipe, model, out)


def with_flags(recipe: Recipe, model: str | None = None, out: str | None = None) -> Recipe:
    """Command-line flags win over the recipe."""
    if model is not None:
        recipe = replace(recipe, model=model)
    if out is not None:
        recipe = replace(recipe, out=out)
    return recipe


def schema_help() -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every recipe key: the reference table in the docs."""
    rows = [(key, _type_name(annotation), "", meaning) for key, (annotation, meaning) in _TOP_LEVEL.items()]
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            rows.append((f"{name}.{f.name}", _type_name(hints[f.name]), repr(f.default), f.metadata["help"]))
    return rows
