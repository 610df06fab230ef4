"""Architecture configs. SAM and EfficientSAM differ only in the values set here.

Every difference between the two families listed in the reference (activation, norms, resize policy,
prompt-token handling, two-way self-attention, position-embedding layout) is one field below.
"""

from __future__ import annotations

import ast
import dataclasses
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


@dataclass
class HQConfig:
    """HQ-SAM on top of the model: the early feature is the output of encoder block `early_block`
    (0-based; SAM: the first global-attention block)."""

    early_block: int = 2


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
    """Return a copy of `cfg` with flat overrides such as `encoder_depth=2` or `decoder_activation="gelu"`."""
    cfg = SamConfig.from_dict(cfg.to_dict())
    for key, value in overrides.items():
        target, name = cfg, key
        for prefix, sub in _PREFIXES.items():
            if key.startswith(prefix) and hasattr(getattr(cfg, sub), key[len(prefix):]):
                target, name = getattr(cfg, sub), key[len(prefix):]
                break
        if not hasattr(target, name) or name.startswith("_"):
            raise TypeError(
                f"unknown override {key!r}; use top-level SamConfig fields or encoder_*/prompt_*/decoder_* "
                f"fields, e.g. encoder_depth=2, encoder_embed_dim=64"
            )
        setattr(target, name, tuple(value) if isinstance(value, list) else value)
    return cfg


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
