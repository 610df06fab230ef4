"""Run configs: nested dataclasses read from YAML, with `key.sub=value` command-line overrides.

Every trainer's config is a dataclass with at least the sections below (`output_dir`, `seed`,
`resume`, `data.train`, `data.val`, `train.*`); trainers add their own sections. Unknown keys and
values of the wrong type are errors that name the key, so a typo never silently trains the default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

import yaml

T = TypeVar("T")


@dataclass
class TrainConfig:
    """Optimisation and loop settings shared by the three trainers."""

    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides `epochs` when set
    # End this process after this many optimizer steps (saving a checkpoint), as a time-limited
    # cluster job would; `resume=auto` continues the same schedule. None = run to the end.
    stop_after: int | None = None
    # Per process; "auto" = global_batch_size / processes (no gradient accumulation), so one config
    # runs unchanged on 1 or N processes.
    batch_size: int | Literal["auto"] = 64
    global_batch_size: int | None = None  # default batch_size x processes; reached by gradient accumulation
    lr: float | None = None  # absolute peak lr; None = blr x global_batch_size / 256
    blr: float | None = None
    optimizer: str = "adamw"  # adamw | adam
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # cosine | linear | step | constant (after warm-up)
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    min_lr: float = 0.0
    lr_milestones: tuple[float, ...] = ()  # epochs at which the "step" schedule multiplies by lr_gamma
    lr_gamma: float = 0.1
    layer_decay: float | None = None  # layer-wise lr decay (ViT blocks), None = off
    grad_clip: float | None = None  # max gradient norm (> 0); None = no clipping
    mixed_precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | no | bf16 | fp16
    num_workers: int = 4
    log_every: int = 10
    eval_every: int | None = None  # optimizer steps; None = at the end of every epoch, 0 = at the end of the run only
    eval_at_start: bool = False  # also evaluate the initial model (step 0)
    save_every: int = 1000  # optimizer steps; a checkpoint is also written at the end
    keep_checkpoints: int = 2

    def validate(self, prefix: str = "train.") -> None:
        """Value checks (the types are checked by `from_dict`): a `ConfigError` naming the key for
        any value that would train nothing, divide by zero, or train something else than asked."""
        _check_values(self, prefix)


@dataclass
class RunConfig:
    """Top-level keys every trainer understands."""

    output_dir: str = "runs/run"
    seed: int = 0
    resume: str | None = None  # "auto" (newest checkpoint in output_dir, if any) or a checkpoint path
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """All value checks of a run (`load_config` and `train` call this); trainers extend it for
        their own sections (calling `super().validate()`)."""
        if not str(self.output_dir).strip():
            raise ConfigError("output_dir: empty; give the run folder")
        out = Path(self.output_dir)
        for p in (out, *out.parents):  # the folder, or the first existing folder above it
            if p.exists():
                if not p.is_dir():
                    what = f"output_dir={self.output_dir}" + ("" if p == out else f": {p}")
                    raise ConfigError(f"{what} is an existing file, not a folder; choose another output_dir")
                break
        if isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed: expected an integer in [0, 2**32), got {self.seed!r}")
        self.train.validate()


class ConfigError(ValueError):
    pass


def check(ok: bool, key: str, value: Any, rule: str) -> None:
    """`ConfigError("<key>=<value>: <rule>")` unless `ok` (for the trainers' own `validate()`)."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {rule}")


def check_min(section: Any, prefix: str, **minimums: int) -> None:
    """Each named number of `section` (None allowed) is >= its minimum, else a ConfigError naming it."""
    for key, minimum in minimums.items():
        v = getattr(section, key)
        check(v is None or v >= minimum, prefix + key, v, f"must be >= {minimum}")


LR_SCHEDULES = ("cosine", "linear", "step", "constant")
OPTIMIZERS = ("adamw", "adam")
MIXED_PRECISION = ("auto", "no", "false", "bf16", "fp16")  # "false": a bare YAML `no`


def _check_values(t: "TrainConfig", prefix: str) -> None:
    def bad(key: str, rule: str) -> ConfigError:
        return ConfigError(f"{prefix}{key}={getattr(t, key)!r}: {rule}")

    def count(key: str, minimum: int, rule: str, optional: bool = False) -> None:
        v = getattr(t, key)
        if v is None and optional:
            return
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise bad(key, rule)

    def number(key: str, ok: Callable[[float], bool], rule: str, optional: bool = False) -> None:
        v = getattr(t, key)
        if v is None and optional:
            return
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or not ok(v):
            raise bad(key, rule)

    count("max_steps", 1, "must be >= 1 (or null to use train.epochs)", optional=True)
    if t.max_steps is None:
        number("epochs", lambda v: v > 0, "must be > 0 (or set train.max_steps)")
    count("stop_after", 1, "must be >= 1 (or null to run to the end)", optional=True)
    if t.batch_size != "auto":
        count("batch_size", 1, "must be >= 1 (or auto)")
    count("global_batch_size", 1, "must be >= 1 (or null: batch_size x processes)", optional=True)
    number("lr", lambda v: v > 0, "must be > 0 (or null to use train.blr)", optional=True)
    number("blr", lambda v: v > 0, "must be > 0 (or null)", optional=True)
    if t.lr is None and t.blr is None:
        raise ConfigError(f"set {prefix}lr (absolute) or {prefix}blr (scaled by global_batch_size / 256)")
    if t.optimizer not in OPTIMIZERS:
        raise bad("optimizer", f"expected {' or '.join(OPTIMIZERS)}")
    if len(t.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in t.betas):
        raise bad("betas", "expected two numbers in [0, 1)")
    number("eps", lambda v: v >= 0, "must be >= 0")
    number("weight_decay", lambda v: v >= 0, "must be >= 0")
    if t.lr_schedule not in LR_SCHEDULES:
        raise bad("lr_schedule", f"expected {', '.join(LR_SCHEDULES)}")
    number("warmup_epochs", lambda v: v >= 0, "must be >= 0")
    count("warmup_steps", 0, "must be >= 0 (or null to use train.warmup_epochs)", optional=True)
    number("min_lr", lambda v: v >= 0, "must be >= 0")
    if not all(isinstance(m, (int, float)) and math.isfinite(m) and m >= 0 for m in t.lr_milestones):
        raise bad("lr_milestones", "expected epochs >= 0")
    number("lr_gamma", lambda v: v > 0, "must be > 0")
    number("layer_decay", lambda v: v > 0, "must be > 0 (or null for none)", optional=True)
    number("grad_clip", lambda v: v > 0, "must be > 0 (the max gradient norm), or null for no clipping", optional=True)
    if t.mixed_precision not in MIXED_PRECISION:
        raise bad("mixed_precision", "expected auto, no, bf16 or fp16")
    count("num_workers", 0, "must be >= 0 (0 = load in the main process)")
    count("log_every", 1, "must be >= 1 (optimizer steps between metrics rows)")
    count("eval_every", 0, "must be >= 0 (0 = at the end of the run only; null = every epoch)", optional=True)
    count("save_every", 1, "must be >= 1 (optimizer steps between checkpoints)")
    count("keep_checkpoints", 1, "must be >= 1 (the newest checkpoints kept)")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad configuration); the message says what to do."""


def parse_value(text: str) -> Any:
    """A command-line value as YAML: `2`, `0.5`, `true`, `null`, `[1, 3]`, `{a: 1}`, or a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(d: dict, key: str, value: Any) -> None:
    """d["a"]["b"] = value for key "a.b", creating sub-dicts."""
    parts = key.split(".")
    for p in parts[:-1]:
        sub = d.get(p)
        if sub is None:
            sub = d[p] = {}
        elif not isinstance(sub, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
        d = sub
    d[parts[-1]] = value


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]
    return False, tp


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}


def _describe(tp: Any) -> str:
    """`int | Literal["auto"]` -> "an integer or 'auto'" (for error messages)."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str, default: Any = None) -> Any:
    optional, tp = _is_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{key}: null is not allowed (expected {_describe(tp)})")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, prefix=key + ".", base=default if isinstance(default, tp) else None)
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool) or value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin in (list,):
        (a,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, a, key) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if isinstance(value, bool):  # YAML 1.1 reads true/false/yes/no/on/off as booleans
            return "true" if value else "false"
        return str(value)
    return value


def from_dict(cls: type[T], d: dict[str, Any], prefix: str = "", base: T | None = None) -> T:
    """Build dataclass `cls` from a nested dict; unknown keys raise `ConfigError` naming them.

    Keys absent from `d` keep their values in `base` (default: `cls()`), so a trainer's own defaults
    for a shared section (e.g. its `train` recipe) survive a YAML file that sets only a few keys.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known in {prefix or 'top level'}: {', '.join(sorted(names))}"
        )
    base = cls() if base is None else base
    kwargs = {k: _coerce(v, hints[k], prefix + k, getattr(base, k)) for k, v in d.items()}
    return dataclasses.replace(base, **kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML / trackers."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """YAML file (optional) + `key.sub=value` overrides -> dataclass `cls`.

    A YAML file may name a `base:` file (relative to itself) whose values it updates. The result's
    `validate()` (if it has one) checks the values: every bad input is a `ConfigError` naming it.
    """
    d: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"expected key.sub=value, got {item!r}")
        key, value = item.split("=", 1)
        set_dotted(d, key.strip(), parse_value(value))
    cfg = from_dict(cls, d)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}{where}: not valid YAML ({what})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = d.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file name, got {base!r}")
    if base is not None:
        merged = _read_yaml(path.parent / base)
        _deep_update(merged, d)
        d = merged
    return d


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
