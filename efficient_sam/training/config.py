"""Run configs: nested dataclasses read from YAML, with `key.sub=value` command-line overrides.

Every trainer's config is a dataclass with at least the sections below (`output_dir`, `seed`,
`resume`, `data.train`, `data.val`, `train.*`); trainers add their own sections. Unknown keys and
values of the wrong type are errors that name the key, so a typo never silently trains the default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
    batch_size: int = 64  # per process
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
    grad_clip: float | None = None
    mixed_precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | no | bf16 | fp16
    num_workers: int = 4
    log_every: int = 10
    eval_every: int | None = None  # optimizer steps; None = at the end of every epoch
    eval_at_start: bool = False  # also evaluate the initial model (step 0)
    save_every: int = 1000  # optimizer steps; a checkpoint is also written at the end
    keep_checkpoints: int = 2


@dataclass
class RunConfig:
    """Top-level keys every trainer understands."""

    output_dir: str = "runs/run"
    seed: int = 0
    resume: str | None = None  # "auto" (newest checkpoint in output_dir, if any) or a checkpoint path
    train: TrainConfig = field(default_factory=TrainConfig)


class ConfigError(ValueError):
    pass


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


def _coerce(value: Any, tp: Any, key: str, default: Any = None) -> Any:
    optional, tp = _is_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{key}: null is not allowed (expected {getattr(tp, '__name__', tp)})")
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
        raise ConfigError(f"{key}: {value!r} fits none of {tp}")
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

    A YAML file may name a `base:` file (relative to itself) whose values it updates.
    """
    d: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"expected key.sub=value, got {item!r}")
        key, value = item.split("=", 1)
        set_dotted(d, key.strip(), parse_value(value))
    return from_dict(cls, d)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    d = yaml.safe_load(path.read_text()) or {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = d.pop("base", None)
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
