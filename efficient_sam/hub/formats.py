"""Format dispatch: a state dict of any known layout (+ the source's config) -> the model it holds, loaded strictly.

transformers files (`SamModel`, `SamHQModel`, `SamVisionModel`) take their architecture from transformers'
config.json beside them when neither `model=` nor our config.json gives one (`interop`). Our model computes
SAM's two-way LayerNorms with eps 1e-5 (the official value); transformers' default
`mask_decoder_config.layer_norm_eps` is 1e-6 (measured: up to 2e-4 relative in IoU, 7e-5 in logits)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping

import torch
from torch import nn

from ..checkpoint import (
    KNOWN_FORMATS,
    CheckpointError,
    check_state_dict,
    detect_format,
    from_efficient_sam_layout,
    from_timm_samvit_layout,
    from_transformers_layout,
    load_strict,
)
from ..config import ImageEncoderConfig, SamConfig, apply_encoder_overrides, apply_overrides, drop_stale_global_indexes
from ..modeling.image_encoder import ImageEncoderViT
from ..modeling.mask_decoder_hq import freeze_all_but_adapter
from ..modeling.sam import Sam
from ..registry import config_name, get_config, infer_model_name, with_hq
from .interop import (
    encoder_config_from_transformers,
    is_transformers_config,
    sam_config_from_transformers,
    transformers_early_block,
)
from .resolve import Source


def _config_kind(config: Mapping | None) -> str | None:
    """'sam' (our SamConfig), 'image_encoder' (our ImageEncoderConfig) or None (foreign/absent)."""
    if not isinstance(config, Mapping):
        return None
    if "family" in config and "image_encoder" in config:
        return "sam"
    if {"embed_dim", "depth", "pos_embed", "patch_size"} <= set(config):
        return "image_encoder"
    return None


def _stored_sam_config(src: Source) -> SamConfig:
    """Our config.json as a validated SamConfig (CheckpointError naming the file if it is not one)."""
    try:
        cfg = SamConfig.from_dict(src.config)
        _drop_stale(cfg.image_encoder, src)
        return cfg.validate()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{src.label}: its config.json is not a valid SamConfig ({e})") from e


def _stored_encoder_config(src: Source) -> ImageEncoderConfig:
    try:
        enc = ImageEncoderConfig.from_dict(src.config)
        _drop_stale(enc, src)
        return enc.validate()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{src.label}: its config.json is not a valid ImageEncoderConfig ({e})") from e


def _drop_stale(enc: ImageEncoderConfig, src: Source) -> None:
    stale = drop_stale_global_indexes(enc)
    if stale:
        warnings.warn(
            f"{src.label}: its config.json lists global_attn_indexes {list(stale)} past its {enc.depth} encoder "
            f"blocks (saved before they were checked, by a model whose encoder_depth was lowered); they name no "
            f"block and are dropped (the model is the same); save it again to update config.json",
            stacklevel=5,
        )


def _check_model_matches_config(src: Source, model: str, overrides: dict) -> None:
    """`model=` with a source whose config.json (ours) describes another architecture is an error: the
    file was saved from the config.json architecture, so either the shapes differ (the strict load would
    fail with a list of shape conflicts) or, worse, they agree and the model would silently compute
    something else (another activation, norm, resize or family)."""
    kind = _config_kind(src.config)
    if kind is None:
        return
    asked_cfg = get_config(model, **overrides)
    if kind == "sam":
        stored = _stored_sam_config(src)
        mine = apply_overrides(stored, **overrides).to_dict()
        asked = (with_hq(asked_cfg, stored.hq.early_block) if stored.hq is not None else asked_cfg).to_dict()
        described = config_name(dataclasses.replace(stored, hq=None)) or f"a custom {stored.family} model"
    else:
        stored_enc = _stored_encoder_config(src)
        mine = dataclasses.asdict(apply_encoder_overrides(stored_enc, **overrides))
        asked = dataclasses.asdict(asked_cfg.image_encoder)
        described = f"a {stored_enc.embed_dim}-wide {stored_enc.depth}-block image encoder"
    diffs = _differences(mine, asked)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; ... ({len(diffs)} fields)" if len(diffs) > 8 else "")
        raise CheckpointError(
            f"{src.label}: its config.json describes {described}, not model={model!r}"
            + (f" with overrides {overrides}" if overrides else "")
            + f" ({shown}). Drop model= to load the architecture config.json describes (flat overrides such "
            f"as encoder_depth=2 still apply on top of it)."
        )


def _differences(stored: dict, asked: dict, path: str = "") -> list[str]:
    out = []
    for k in sorted(set(stored) | set(asked)):
        a, b = stored.get(k), asked.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{path}{k}.")
        elif a != b:
            out.append(f"{path}{k}: config.json {a!r} vs model= {b!r}")
    return out


def _sam_config(src: Source, model: str | None, overrides: dict) -> tuple[SamConfig | None, str | None]:
    if model is not None:
        _check_model_matches_config(src, model, overrides)
        return get_config(model, **overrides), model
    if _config_kind(src.config) == "sam":
        cfg = _stored_sam_config(src)
        cfg = apply_overrides(cfg, **overrides) if overrides else cfg
        return cfg, config_name(cfg) or f"custom {cfg.family} (config.json)"
    return None, None


def _encoder_config(src: Source, model: str | None, overrides: dict) -> tuple[ImageEncoderConfig | None, str | None]:
    if model is not None:
        _check_model_matches_config(src, model, overrides)
        return get_config(model, **overrides).image_encoder, f"{model} image encoder"
    if _config_kind(src.config) == "image_encoder":
        enc = _stored_encoder_config(src)
        if overrides:
            enc = apply_encoder_overrides(enc, **overrides)
        return enc, "image encoder (config.json)"
    return None, None


def build_and_load(
    sd: dict[str, torch.Tensor], src: Source, model: str | None, overrides: dict
) -> tuple[nn.Module, str, str]:
    """-> (model in our layout, strictly loaded; the detected format; a description of the architecture)."""
    fmt = detect_format(sd)
    if fmt == "hq_sam":
        if model is None and _config_kind(src.config) == "sam":  # our merged HQ export
            cfg, arch = _sam_config(src, None, overrides)
            if cfg.hq is None:
                raise CheckpointError(f"{src.label}: HQ-SAM weights, but its config.json describes no HQ model (hq: null)")
            net = Sam(cfg)
            _load_strict(net, sd, src.label, fmt, model, overrides)
            return net, fmt, f"HQ-SAM on {arch}"
        if model is not None:
            _check_model_matches_config(src, model, overrides)
        base = model or infer_model_name(sd)
        return load_hq(sd, src.label, base, overrides, model), fmt, f"HQ-SAM on {base}"
    if fmt in ("timm_samvit", "image_encoder"):
        enc_sd = from_timm_samvit_layout(sd) if fmt == "timm_samvit" else sd
        enc_cfg, arch = _encoder_config(src, model, overrides)
        if enc_cfg is None:
            name = infer_model_name(enc_sd, prefix="")
            enc_cfg, arch = get_config(name, **overrides).image_encoder, f"{name} image encoder"
        net = ImageEncoderViT(enc_cfg)
        _load_strict(net, enc_sd, src.label, fmt, model, overrides, prefix="")
        return net, fmt, arch
    if fmt == "transformers" and not any(k.startswith(("prompt_encoder.", "mask_decoder.")) for k in sd):
        return _transformers_encoder(sd, src, model, overrides)
    if fmt in ("transformers", "transformers_hq"):
        hq = fmt == "transformers_hq"
        cfg, arch = _transformers_sam_config(sd, src, model, overrides, hq)
        net = Sam(cfg)
        _load_strict(net, from_transformers_layout(sd), src.label, fmt, model, overrides)
        if hq:  # as an official HQ-SAM file: only the adapter trains
            freeze_all_but_adapter(net)
        return net, fmt, arch
    if fmt in ("sam", "efficient_sam"):
        ours = from_efficient_sam_layout(sd) if fmt == "efficient_sam" else sd
        cfg, arch = _sam_config(src, model, overrides)
        if cfg is None:
            name = infer_model_name(ours)
            cfg, arch = get_config(name, **overrides), name
        net = Sam(cfg)
        _load_strict(net, ours, src.label, fmt, model, overrides)
        return net, fmt, arch
    keys = sorted(sd)
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "")
    known = "\n".join(f"  - {name}: {desc}" for name, desc in KNOWN_FORMATS.items())
    raise CheckpointError(
        f"{src.label}: unknown checkpoint format (keys: {shown}). Known formats:\n{known}"
    )


def _transformers_encoder(
    sd: Mapping[str, torch.Tensor], src: Source, model: str | None, overrides: dict
) -> tuple[nn.Module, str, str]:
    """A transformers `SamVisionModel` file (vision_encoder.* only) -> our ImageEncoderViT."""
    enc_sd = {k[len("image_encoder."):]: v for k, v in from_transformers_layout(sd).items()}
    enc_cfg, arch = _encoder_config(src, model, overrides)
    if enc_cfg is None and isinstance(src.config, Mapping) and src.config.get("model_type") in (
        "sam_vision_model", "sam_hq_vision_model"
    ):
        enc_cfg = encoder_config_from_transformers(src.config, f"{src.label}: config.json")
        enc_cfg = apply_encoder_overrides(enc_cfg, **overrides) if overrides else enc_cfg
        arch = "image encoder (transformers config.json)"
    if enc_cfg is None:
        name = infer_model_name(enc_sd, prefix="")
        enc_cfg, arch = get_config(name, **overrides).image_encoder, f"{name} image encoder"
    net = ImageEncoderViT(enc_cfg)
    _load_strict(net, enc_sd, src.label, "transformers", model, overrides, prefix="")
    return net, "transformers", arch


def _transformers_sam_config(
    sd: Mapping[str, torch.Tensor], src: Source, model: str | None, overrides: dict, hq: bool
) -> tuple[SamConfig, str]:
    """The architecture of a transformers `SamModel` (`hq` False) / `SamHQModel` file: `model=` (+ overrides),
    else our config.json, else transformers' config.json beside it, else inferred from the shapes. HQ models
    fuse the block transformers fuses (the first global-attention block)."""
    if model is None and is_transformers_config(src.config):
        cfg = sam_config_from_transformers(src.config, f"{src.label}: config.json")
        if (cfg.hq is not None) != hq:
            said = "SamHQModel" if cfg.hq is not None else "SamModel"
            raise CheckpointError(
                f"{src.label}: its config.json describes a transformers {said}, but the weights are "
                f"{'' if hq else 'not '}HQ-SAM's (mask_decoder.hq_token {'present' if hq else 'absent'})"
            )
        cfg = apply_overrides(cfg, **overrides) if overrides else cfg
        name = config_name(dataclasses.replace(cfg, hq=None)) or "custom sam (transformers config.json)"
        return cfg, f"HQ-SAM on {name}" if hq else name
    cfg, arch = _sam_config(src, model, overrides)
    if cfg is None:
        name = infer_model_name(from_transformers_layout(sd))
        cfg, arch = get_config(name, **overrides), name
    if hq and cfg.hq is None:
        early = transformers_early_block(cfg.image_encoder)
        if early is None:
            raise CheckpointError(
                f"{src.label}: a transformers SamHQModel fuses the output of the first global-attention block, but "
                f"{arch} has none (encoder_global_attn_indexes is empty); pass the overrides that describe the file"
            )
        cfg, arch = with_hq(cfg, early), f"HQ-SAM on {arch}"
    elif not hq and cfg.hq is not None:
        raise CheckpointError(f"{src.label}: its config.json describes an HQ model, but the weights have no HQ adapter")
    return cfg, arch


def _load_strict(
    net: nn.Module, sd: Mapping[str, torch.Tensor], label: str, fmt: str, model: str | None, overrides: dict,
    prefix: str = "image_encoder.",
) -> None:
    """`load_strict`, with hints on what the file looks like and what was asked (`model`, `overrides`)."""
    try:
        check_state_dict(net, sd, label, layout=fmt)
    except CheckpointError as e:
        hints = []
        try:
            guess = infer_model_name(sd, prefix=prefix)
        except CheckpointError:
            guess = None
        if model is not None:
            hints.append(f"you asked for model={model!r}" + (f" with overrides {overrides}" if overrides else ""))
        elif overrides:
            hints.append(f"with overrides {overrides}")
        if guess is not None and guess != model:
            hints.append(f"the file's image encoder looks like {guess!r}")
        raise CheckpointError(str(e) + ("\n  " + "; ".join(hints) if hints else "")) from None
    load_strict(net, sd, label, layout=fmt)  # + the finiteness check


def load_hq(
    sd: Mapping[str, torch.Tensor], label: str, base: str, overrides: dict, model: str | None = None
) -> nn.Module:
    """An official HQ-SAM file on the registered `base` (inferred from its unchanged SAM keys, or `model=`),
    loaded strictly; as with `efficient_sam.build_hq_model`, only the adapter is trainable."""
    net = Sam(with_hq(get_config(base, **overrides)))
    _load_strict(net, sd, label, "hq_sam", model, overrides)
    freeze_all_but_adapter(net)
    return net
