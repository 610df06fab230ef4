"""Architecture configs. SAM and EfficientSAM differ only in the values set here.

Every difference between the two families listed in the reference (activation, norms, resize policy,
prompt-token handling, two-way self-attention, position-embedding layout) is one field below.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImageEncoderConfig:
    img_size: int = 1024
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    out_chans: int = 256
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    # 0 = every block global (EfficientSAM); 14 = SAM's windows with `global_attn_indexes` global.
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    use_rel_pos: bool = True
    # "grid": pos_embed (1, G, G, C) at the token grid (SAM).
    # "cls_grid": pos_embed (1, 1 + P*P, C) with a cls slot on the P x P pretraining grid, resized to
    #             the token grid every forward (EfficientSAM / SAMI, P = pos_embed_grid).
    pos_embed: str = "grid"
    pos_embed_grid: int = 14
    drop_path_rate: float = 0.0

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageEncoderConfig":
        """From `dataclasses.asdict` / JSON (lists back to tuples)."""
        return cls(**_tuples(d))

    def validate(self) -> "ImageEncoderConfig":
        """Raise TypeError / ValueError naming the field (`encoder_depth (image_encoder.depth)`) if this
        config does not describe a buildable encoder; returns self."""
        c = _Checker(self, "image_encoder")
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "out_chans",
                     "pos_embed_grid"):
            c.at_least(name, 1)
        c.at_least("window_size", 0)
        c.positive("mlp_ratio")
        c.positive("norm_eps")
        c.require("drop_path_rate", 0 <= self.drop_path_rate < 1, "must be in [0, 1)")
        c.choice("pos_embed", ("grid", "cls_grid"))
        c.require(
            "img_size", self.img_size % self.patch_size == 0,
            f"must be a multiple of {c.name('patch_size', True)} {self.patch_size} (the token grid is "
            f"img_size / patch_size), e.g. {self.img_size // self.patch_size * self.patch_size or self.patch_size}",
        )
        c.require(
            "embed_dim", self.embed_dim % self.num_heads == 0,
            f"must be divisible by {c.name('num_heads', True)} {self.num_heads} (each head gets embed_dim / num_heads "
            "channels)",
        )
        outside = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        c.require(
            "global_attn_indexes", not outside,
            f"names blocks {outside} that the {self.depth}-block encoder does not have (blocks are 0..{self.depth - 1})",
        )
        return self


@dataclass
class PromptEncoderConfig:
    embed_dim: int = 256
    mask_in_chans: int = 16
    # SAM: label 0 adds a learned negative embedding; EfficientSAM: nothing.
    negative_point_embed: bool = True
    # SAM: mask prompts through a conv stack, `no_mask_embed` otherwise; EfficientSAM: no dense prompt.
    mask_prompt: bool = True
    # SAM zeroes the positional encoding of padding points (label -1); EfficientSAM keeps it.
    zero_padding_pe: bool = True
    # SAM appends one padding point when no box is given; EfficientSAM pads/truncates to exactly N.
    max_points: int | None = None

    def validate(self) -> "PromptEncoderConfig":
        c = _Checker(self, "prompt_encoder")
        c.at_least("embed_dim", 2)
        c.require("embed_dim", self.embed_dim % 2 == 0, "must be even (half sine, half cosine Fourier features)")
        c.at_least("mask_in_chans", 1)
        if self.max_points is not None:
            c.at_least("max_points", 1)
        return self


@dataclass
class MaskDecoderConfig:
    transformer_dim: int = 256
    transformer_depth: int = 2
    transformer_mlp_dim: int = 2048
    transformer_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # Activation of the two-way-transformer MLP, hypernetwork MLPs and IoU head: SAM relu, EfficientSAM gelu.
    activation: str = "relu"
    # Norm after the first upscaling conv: SAM "layernorm2d" (per pixel, eps 1e-6); EfficientSAM
    # "groupnorm" (GroupNorm(1, C), joint over C,H,W, eps 1e-5).
    upscaling_norm: str = "layernorm2d"
    # Two-way self-attention: "sam" (layer 0 without residual/PE, PE only on q/k later) or
    # "efficient_sam" (residual everywhere, PE added into the token stream from layer 1 on).
    two_way_style: str = "sam"

    def validate(self) -> "MaskDecoderConfig":
        c = _Checker(self, "mask_decoder")
        for name in ("transformer_dim", "transformer_mlp_dim", "transformer_num_heads", "attention_downsample_rate",
                     "num_multimask_outputs", "iou_head_depth", "iou_head_hidden_dim"):
            c.at_least(name, 1)
        c.at_least("transformer_depth", 0)
        c.choice("activation", ("relu", "gelu"))
        c.choice("upscaling_norm", ("layernorm2d", "groupnorm"))
        c.choice("two_way_style", ("sam", "efficient_sam"))
        internal = self.transformer_dim // self.attention_downsample_rate
        c.require(
            "transformer_num_heads", internal % self.transformer_num_heads == 0 and
            self.transformer_dim % self.transformer_num_heads == 0,
            f"must divide {c.name('transformer_dim', True)} {self.transformer_dim} and transformer_dim // "
            f"attention_downsample_rate = {internal}",
        )
        return self


@dataclass
class HQConfig:
    """HQ-SAM on top of the model: the early feature is the output of encoder block `early_block`
    (0-based; SAM: the first global-attention block)."""

    early_block: int = 2

    def validate(self) -> "HQConfig":
        _Checker(self, "hq").at_least("early_block", 0)
        return self


@dataclass
class SamConfig:
    """A whole promptable model. `family` selects the official pre/post-processing."""

    family: str = "sam"  # "sam" | "efficient_sam"
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    prompt_encoder: PromptEncoderConfig = field(default_factory=PromptEncoderConfig)
    mask_decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    # Preprocessing: "longest_side" (SAM: resize longest side, pad bottom/right) or "stretch"
    # (EfficientSAM: bilinear to img_size x img_size).
    resize: str = "longest_side"
    # Mean/std on the 0-255 scale (EfficientSAM's [0,1]-scale constants x 255 are the same numbers).
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    mask_threshold: float = 0.0
    hq: HQConfig | None = None  # set: an HQ-SAM model (HQ token + global-local fusion in the decoder)

    @property
    def decoder_family(self) -> str:
        """Whose prompt encoder + mask decoder this is: "sam" or "efficient_sam" (independent of the
        encoder and pre-processing, e.g. an EfficientSAM fine-tuned with SAM's decoder)."""
        return "efficient_sam" if self.mask_decoder.two_way_style == "efficient_sam" else "sam"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "SamConfig":
        """Check every field (types, ranges, choices, the sub-configs and how they fit together); raise
        TypeError (wrong type) or ValueError (bad value) naming the field by its override name and its
        path, e.g. `encoder_depth (image_encoder.depth) must be >= 1, got -1`. Called by `Sam(...)`,
        `get_config` / `build_model` and the loaders; returns self."""
        c = _Checker(self, "")
        for name, cls in (("image_encoder", ImageEncoderConfig), ("prompt_encoder", PromptEncoderConfig),
                          ("mask_decoder", MaskDecoderConfig)):
            sub = getattr(self, name)
            if not isinstance(sub, cls):
                raise TypeError(f"{name} must be a {cls.__name__}, got {type(sub).__name__}")
            sub.validate()
        if self.hq is not None:
            if not isinstance(self.hq, HQConfig):
                raise TypeError(f"hq must be an HQConfig or None, got {type(self.hq).__name__}")
            self.hq.validate()
        c.choice("family", ("sam", "efficient_sam"), what="model family")
        c.choice("resize", ("longest_side", "stretch"), what="resize policy")
        c.require("pixel_std", all(v > 0 for v in self.pixel_std), "must be > 0")
        enc, pe, md = self.image_encoder, self.prompt_encoder, self.mask_decoder
        if not enc.out_chans == pe.embed_dim == md.transformer_dim:
            raise ValueError(
                f"encoder_out_chans {enc.out_chans}, prompt_embed_dim {pe.embed_dim} and decoder_transformer_dim "
                f"{md.transformer_dim} must be equal (the decoder attends over the image embedding with the "
                "prompt tokens)"
            )
        if self.hq is not None and not 0 <= self.hq.early_block < enc.depth:
            raise ValueError(f"hq.early_block {self.hq.early_block} is not a block of the {enc.depth}-block encoder")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamConfig":
        d = dict(d)
        enc = ImageEncoderConfig.from_dict(d.pop("image_encoder", {}))
        pe = PromptEncoderConfig(**d.pop("prompt_encoder", {}))
        md = MaskDecoderConfig(**d.pop("mask_decoder", {}))
        hq = d.pop("hq", None)
        hq = HQConfig(**hq) if isinstance(hq, dict) else hq
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SamConfig keys: {sorted(unknown)}")
        return cls(image_encoder=enc, prompt_encoder=pe, mask_decoder=md, hq=hq, **_tuples(d))


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


# Flat override names accepted by build_model(name, **overrides) -> (sub-config, field).
_PREFIXES = {"encoder_": "image_encoder", "prompt_": "prompt_encoder", "decoder_": "mask_decoder"}


def apply_overrides(cfg: SamConfig, **overrides: Any) -> SamConfig:
    """Return a validated copy of `cfg` with flat overrides such as `encoder_depth=2` or
    `decoder_activation="gelu"`. A value of the wrong type raises TypeError naming the key and the
    expected type; a value out of range raises ValueError (`SamConfig.validate`). Lowering
    `encoder_depth` without giving `encoder_global_attn_indexes` drops the inherited global blocks the
    smaller encoder no longer has (`sam_vit_b`'s (2, 5, 8, 11) becomes (), all windowed, at depth 2)."""
    return _apply(cfg, overrides).validate()


def apply_encoder_overrides(enc: ImageEncoderConfig, **overrides: Any) -> ImageEncoderConfig:
    """`apply_overrides` for an image encoder on its own; returns a validated copy."""
    return _apply(SamConfig(image_encoder=ImageEncoderConfig.from_dict(dataclasses.asdict(enc))), overrides) \
        .image_encoder.validate()


def check_overrides(**overrides: Any) -> None:
    """Raise TypeError for an unknown override name or a value of the wrong type (`encoder_depth="two"`),
    before anything is built or downloaded (the ranges are checked once the config is complete)."""
    cfg = SamConfig()
    for key, value in overrides.items():
        _resolve_override(cfg, key, value)


def _resolve_override(cfg: SamConfig, key: str, value: Any) -> tuple[Any, str, Any]:
    """-> (the config object the flat `key` sets, its field name, the value to set); TypeError if unknown or mistyped."""
    target, name = cfg, key
    for prefix, sub in _PREFIXES.items():
        if key.startswith(prefix) and hasattr(getattr(cfg, sub), key[len(prefix):]):
            target, name = getattr(cfg, sub), key[len(prefix):]
            break
    if name.startswith("_") or name not in {f.name for f in dataclasses.fields(target)}:
        raise TypeError(
            f"unknown override {key!r}; use top-level SamConfig fields or encoder_*/prompt_*/decoder_* "
            f"fields, e.g. encoder_depth=2, encoder_embed_dim=64"
        )
    value = tuple(value) if isinstance(value, list) else value
    hint = _hints(type(target))[name]
    if _is_config_hint(hint) and isinstance(value, dict):  # e.g. hq={"early_block": 3}
        cls = next(a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a))
        value = cls.from_dict(value) if hasattr(cls, "from_dict") else cls(**value)
    problem = _type_problem(value, hint)
    if problem is not None:
        raise TypeError(f"override {key}={value!r}: expected {problem}, got {type(value).__name__}")
    return target, name, value


def _apply(cfg: SamConfig, overrides: dict[str, Any]) -> SamConfig:
    cfg = SamConfig.from_dict(cfg.to_dict())
    for key, value in overrides.items():
        target, name, value = _resolve_override(cfg, key, value)
        setattr(target, name, value)
    enc = cfg.image_encoder
    if "encoder_depth" in overrides and "encoder_global_attn_indexes" not in overrides and _is_int(enc.depth):
        enc.global_attn_indexes = tuple(i for i in enc.global_attn_indexes if not _is_int(i) or i < enc.depth)
    return cfg


def drop_stale_global_indexes(enc: ImageEncoderConfig) -> tuple[int, ...]:
    """Remove (in place) and return the `global_attn_indexes` at or past `depth`: what configs saved
    before the check was added hold after `encoder_depth` lowered a registered depth (the blocks they
    name do not exist, so the model is the same without them)."""
    if not (_is_int(enc.depth) and isinstance(enc.global_attn_indexes, tuple)):
        return ()
    stale = tuple(i for i in enc.global_attn_indexes if _is_int(i) and i >= enc.depth)
    if stale:
        enc.global_attn_indexes = tuple(i for i in enc.global_attn_indexes if i not in stale)
    return stale


# ---- validation helpers ----

_FLAT = {"image_encoder": "encoder_", "prompt_encoder": "prompt_", "mask_decoder": "decoder_", "hq": None, "": ""}


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_config_hint(hint: Any) -> bool:
    args = typing.get_args(hint) or (hint,)
    return any(dataclasses.is_dataclass(a) for a in args)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _type_problem(value: Any, hint: Any) -> str | None:
    """None if `value` fits the annotation `hint`, else a description of what was expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        problems = [_type_problem(value, a) for a in inner]
        if any(p is None for p in problems):
            return None
        return " or ".join(problems) + (" or None" if type(None) in args else "")
    if origin is tuple:
        if args and args[-1] is Ellipsis:
            what = f"a tuple of {_type_problem(object(), args[0]).removeprefix('an ').removeprefix('a ')}s"
            ok = isinstance(value, tuple) and all(_type_problem(v, args[0]) is None for v in value)
        else:
            names = [_type_problem(object(), a).removeprefix("an ").removeprefix("a ") for a in args]
            what = f"a tuple of {len(args)} {names[0]}s" if len(set(names)) == 1 else f"a tuple ({', '.join(names)})"
            ok = isinstance(value, tuple) and len(value) == len(args) and all(
                _type_problem(v, a) is None for v, a in zip(value, args)
            )
        return None if ok else what
    if hint is bool:
        return None if isinstance(value, bool) or (_is_int(value) and value in (0, 1)) else "a bool (true/false)"
    if hint is int:
        return None if _is_int(value) else "an int"
    if hint is float:
        return None if _is_real(value) and math.isfinite(value) else "a finite float"
    if hint is str:
        return None if isinstance(value, str) else "a str"
    if dataclasses.is_dataclass(hint):
        return None if isinstance(value, hint) else f"a {hint.__name__}"
    return None


class _Checker:
    """Type-checks every field of a config dataclass on creation, then checks values; errors name the
    field as `encoder_depth (image_encoder.depth)` (its override name and its path)."""

    def __init__(self, cfg: Any, path: str) -> None:
        self.cfg, self.path = cfg, path
        for f in dataclasses.fields(cfg):
            hint = _hints(type(cfg))[f.name]
            if _is_config_hint(hint):
                continue  # sub-configs: checked by SamConfig.validate
            value = getattr(cfg, f.name)
            if isinstance(value, list) and typing.get_origin(hint) is tuple:
                value = tuple(value)
                setattr(cfg, f.name, value)
            problem = _type_problem(value, hint)
            if problem is not None:
                raise TypeError(f"{self.name(f.name)} must be {problem}, got {value!r} ({type(value).__name__})")

    def name(self, field_name: str, short: bool = False) -> str:
        flat = _FLAT.get(self.path)
        dotted = f"{self.path}.{field_name}" if self.path else field_name
        if flat is None or not self.path:
            return dotted
        return f"{flat}{field_name}" if short else f"{flat}{field_name} ({dotted})"

    def require(self, field_name: str, ok: bool, rule: str) -> None:
        if not ok:
            raise ValueError(f"{self.name(field_name)} = {getattr(self.cfg, field_name)!r}: {rule}")

    def at_least(self, field_name: str, low: int) -> None:
        self.require(field_name, getattr(self.cfg, field_name) >= low, f"must be >= {low}")

    def positive(self, field_name: str) -> None:
        self.require(field_name, getattr(self.cfg, field_name) > 0, "must be > 0")

    def choice(self, field_name: str, options: tuple[str, ...], what: str | None = None) -> None:
        if getattr(self.cfg, field_name) not in options:
            self.require(field_name, False, f"unknown {what or 'value'}; expected one of {', '.join(map(repr, options))}")


def parse_override(text: str) -> tuple[str, Any]:
    """`"key=value"` from a command line -> (key, value). The value is read as a Python/JSON literal
    (`2`, `0.5`, `true`, `[1, 3]`, `(1, 3)`), lists become tuples, anything else stays a string."""
    if "=" not in text:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    literal = {"true": "True", "false": "False", "null": "None"}.get(value.strip(), value)
    try:
        parsed = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        parsed = value  # a bare string such as gelu
    return key.strip(), tuple(parsed) if isinstance(parsed, list) else parsed
