"""`from_pretrained`: one call for every published SAM-family checkpoint and our own saved models.

Sources (`name_or_path`):
- a local file (`.safetensors`, `.pth`, `.pt`, `.bin`);
- a local directory: our `save_pretrained` folder (config.json + model.safetensors), or any folder
  with `model.safetensors` / `pytorch_model.bin` / a single checkpoint file, or `filename=` inside it;
- a Hub repo id (`org/name`, optionally `org/name:path/in/repo`), downloaded through
  `huggingface_hub` (its cache, `HF_HUB_OFFLINE`, `revision=`). Without `filename=` the repo's
  `model.safetensors` is used, else `pytorch_model.bin`, with its `config.json` when that is ours.

Formats are recognised from the keys (`checkpoint.KNOWN_FORMATS`): ours / official SAM `.pth`,
EfficientSAM `{"model": sd}` `.pt`, HQ-SAM `.pth`, transformers `SamModel` (`facebook/sam-vit-*`),
timm `samvit_*` (image encoder only). The architecture comes from our config.json when there is one,
else from `model=NAME`, else it is inferred from the shapes (image-encoder width and position-embedding
layout); flat overrides (`encoder_depth=2`, ...) adjust it. Loading is strict. Files are read with
`torch.load(weights_only=True)` or safetensors, never by unpickling code.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .build import get_config, list_models
from .checkpoint import (
    KNOWN_FORMATS,
    CheckpointError,
    check_state_dict,
    detect_format,
    from_efficient_sam_layout,
    from_timm_samvit_layout,
    from_transformers_layout,
    read_state_dict,
)
from .config import ImageEncoderConfig, SamConfig, apply_overrides
from .modeling.image_encoder import ImageEncoderViT
from .modeling.sam import Sam

__all__ = [
    "from_pretrained",
    "infer_model_name",
    "config_name",
    "KNOWN_REPOS",
    "CheckpointNotFoundError",
    "NotCachedError",
    "UnsupportedCheckpointError",
]

WEIGHTS_NAME = "model.safetensors"
PT_WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")

# Published third-party checkpoints: repo id -> {file: what it holds}. Used for messages (which file
# to pick) and documentation; the loaded architecture always comes from the file's keys and shapes.
KNOWN_REPOS: dict[str, dict[str, str]] = {
    "ybelkada/segment-anything": {
        "checkpoints/sam_vit_h_4b8939.pth": "sam_vit_h (official segment_anything)",
        "checkpoints/sam_vit_l_0b3195.pth": "sam_vit_l (official segment_anything)",
        "checkpoints/sam_vit_b_01ec64.pth": "sam_vit_b (official segment_anything)",
        "checkpoints/efficientsam_ti.pth": "efficient_sam_vitt",
        "checkpoints/efficientsam_s.pth": "efficient_sam_vits",
    },
    "yunyangx/EfficientSAM": {
        "efficient_sam_vitt.pt": "efficient_sam_vitt (official EfficientSAM)",
        "efficient_sam_vits.pt": "efficient_sam_vits (official EfficientSAM)",
    },
    "lkeab/hq-sam": {
        "sam_hq_vit_b.pth": "HQ-SAM on sam_vit_b",
        "sam_hq_vit_l.pth": "HQ-SAM on sam_vit_l",
        "sam_hq_vit_h.pth": "HQ-SAM on sam_vit_h",
    },
    **{
        f"facebook/sam-vit-{size}": {WEIGHTS_NAME: f"sam_vit_{size[0]} (transformers SamModel)",
                                     PT_WEIGHTS_NAME: f"sam_vit_{size[0]} (transformers SamModel)"}
        for size in ("base", "large", "huge")
    },
    **{
        f"timm/samvit_{size}_patch16.sa1b": {WEIGHTS_NAME: f"sam_vit_{size[0]} image encoder (timm)",
                                             PT_WEIGHTS_NAME: f"sam_vit_{size[0]} image encoder (timm)"}
        for size in ("base", "large", "huge")
    },
}


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint does not exist (local path, Hub repo, revision or file)."""


class NotCachedError(CheckpointNotFoundError):
    """A Hub file is not in the local cache and cannot be downloaded (offline or unreachable)."""


class UnsupportedCheckpointError(CheckpointError, NotImplementedError):
    """A recognised checkpoint whose model this installation cannot build (e.g. HQ-SAM without
    `hq_adapter.build_hq_model`, MobileSAM's TinyViT encoder)."""


@dataclass
class _Source:
    weights: Path
    label: str  # for messages: the path, or "repo_id/filename@revision"
    config: dict | None = None
    notes: list[str] = field(default_factory=list)


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    filename: str | None = None,
    revision: str | None = None,
    device: torch.device | str | None = None,
    model: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Load any supported checkpoint as a model in eval mode (strict: every key and shape must fit).

    name_or_path: Hub repo id (`"facebook/sam-vit-base"`, `"org/name:file.pth"`), local directory or
        local file.
    filename: file inside the repo/directory (e.g. `"checkpoints/sam_vit_b_01ec64.pth"`).
    revision: Hub branch, tag or commit (default: main).
    model: registry name (`list_models()`) to build, overriding the inferred/stored architecture.
    overrides: flat config overrides (`encoder_depth=2`, `encoder_embed_dim=64`, ...), e.g. for small
        test models or files whose architecture is not a registered one.
    Returns `Sam`, `ImageEncoderViT` (timm `samvit_*` files and saved encoders), or the HQ model of
    `hq_adapter.build_hq_model` for HQ-SAM files.
    """
    net, _ = load_with_info(
        name_or_path,
        filename=filename,
        revision=revision,
        device=device,
        model=model,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
        **overrides,
    )
    return net


def load_with_info(
    name_or_path: str | os.PathLike,
    *,
    filename: str | None = None,
    revision: str | None = None,
    device: torch.device | str | None = None,
    model: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """`from_pretrained`, also returning what was loaded: {"source", "file", "format", "architecture"}."""
    if model is not None and model not in list_models():
        raise ValueError(f"unknown model {model!r}; available: {', '.join(list_models())}")
    src = _resolve(
        name_or_path,
        filename=filename,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
    )
    for note in src.notes:
        warnings.warn(note, stacklevel=3)
    try:
        sd = read_state_dict(src.weights)
    except CheckpointError as e:
        if src.label == str(src.weights):
            raise
        hint = " (Hub file: force a fresh copy with force_download=True)" if "@" in src.label else ""
        raise CheckpointError(f"{src.label}: {e}{hint}") from e.__cause__
    net, fmt, arch = _build_and_load(sd, src, model, overrides)
    if device is not None:
        net.to(device)
    net.eval()
    return net, {"source": src.label, "file": str(src.weights), "format": fmt, "architecture": arch}


# ------------------------------------------------------------------------------------------------
# Architecture


def infer_model_name(state_dict: Mapping[str, torch.Tensor], prefix: str = "image_encoder.") -> str:
    """Registry name whose image encoder fits the file: position-embedding layout and width
    (SAM (1, 64, 64, C): 768/1024/1280 -> sam_vit_b/l/h; EfficientSAM (1, 197, C): 192/384 -> vitt/vits)."""
    pe = state_dict.get(prefix + "pos_embed")
    if pe is None:
        if any(k.startswith(prefix + "layers.") for k in state_dict):
            raise UnsupportedCheckpointError(
                "this checkpoint has a TinyViT image encoder (MobileSAM / HQ-SAM vit_tiny: "
                f"{prefix}layers.*), which is not supported; supported encoders: {_registry_table()}"
            )
        raise CheckpointError(
            f"cannot infer the architecture: the file has no {prefix}pos_embed; pass model=NAME "
            f"(one of {', '.join(list_models())})"
        )
    layout = "grid" if pe.dim() == 4 else "cls_grid"
    width = int(pe.shape[-1])
    names = [
        n for n in list_models()
        if get_config(n).image_encoder.pos_embed == layout and get_config(n).image_encoder.embed_dim == width
    ]
    if len(names) == 1:
        return names[0]
    depth = len({m.group(1) for k in state_dict if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))})
    family = "SAM-style (1, H, W, C)" if layout == "grid" else "EfficientSAM-style (1, 1+P*P, C)"
    raise CheckpointError(
        f"cannot infer the architecture: image encoder with {family} pos_embed of width {width} and depth "
        f"{depth} is not a registered model ({_registry_table()}). Pass model=NAME plus the overrides that "
        f"describe it (e.g. encoder_embed_dim={width}, encoder_depth={depth}, encoder_num_heads=..., "
        f"encoder_global_attn_indexes=...), or save it with save_pretrained so config.json records it."
    )


def _registry_table() -> str:
    return ", ".join(
        f"{n} ({'SAM' if (c := get_config(n)).family == 'sam' else 'EfficientSAM'} width {c.image_encoder.embed_dim})"
        for n in list_models()
    )


def config_name(cfg: SamConfig) -> str | None:
    """The registry name whose config equals `cfg` exactly, if any."""
    d = cfg.to_dict()
    return next((n for n in list_models() if get_config(n).to_dict() == d), None)


def _config_kind(config: Mapping | None) -> str | None:
    """'sam' (our SamConfig), 'image_encoder' (our ImageEncoderConfig) or None (foreign/absent)."""
    if not isinstance(config, Mapping):
        return None
    if "family" in config and "image_encoder" in config:
        return "sam"
    if {"embed_dim", "depth", "pos_embed", "patch_size"} <= set(config):
        return "image_encoder"
    return None


def _sam_config(src: _Source, model: str | None, overrides: dict) -> tuple[SamConfig | None, str | None]:
    if model is not None:
        return get_config(model, **overrides), model
    if _config_kind(src.config) == "sam":
        try:
            cfg = SamConfig.from_dict(src.config)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{src.label}: its config.json is not a valid SamConfig ({e})") from e
        cfg = apply_overrides(cfg, **overrides) if overrides else cfg
        return cfg, config_name(cfg) or f"custom {cfg.family} (config.json)"
    return None, None


def _encoder_config(src: _Source, model: str | None, overrides: dict) -> tuple[ImageEncoderConfig | None, str | None]:
    if model is not None:
        return get_config(model, **overrides).image_encoder, f"{model} image encoder"
    if _config_kind(src.config) == "image_encoder":
        try:
            enc = ImageEncoderConfig.from_dict(src.config)
        except TypeError as e:
            raise CheckpointError(f"{src.label}: its config.json is not a valid ImageEncoderConfig ({e})") from e
        if overrides:
            enc = apply_overrides(SamConfig(image_encoder=enc), **overrides).image_encoder
        return enc, "image encoder (config.json)"
    return None, None


def _build_and_load(
    sd: dict[str, torch.Tensor], src: _Source, model: str | None, overrides: dict
) -> tuple[nn.Module, str, str]:
    fmt = detect_format(sd)
    if fmt == "hq_sam":
        if model is None and _config_kind(src.config) == "sam":  # our merged HQ export
            cfg, arch = _sam_config(src, None, overrides)
            if cfg.hq is None:
                raise CheckpointError(f"{src.label}: HQ-SAM weights, but its config.json describes no HQ model (hq: null)")
            net = Sam(cfg)
            _load_strict(net, sd, src, fmt, model, overrides)
            return net, fmt, f"HQ-SAM on {arch}"
        base = model or infer_model_name(sd)
        return _load_hq(sd, src, base, overrides), fmt, f"HQ-SAM on {base}"
    if fmt in ("timm_samvit", "image_encoder"):
        enc_sd = from_timm_samvit_layout(sd) if fmt == "timm_samvit" else sd
        enc_cfg, arch = _encoder_config(src, model, overrides)
        if enc_cfg is None:
            name = infer_model_name(enc_sd, prefix="")
            enc_cfg, arch = get_config(name, **overrides).image_encoder, f"{name} image encoder"
        net = ImageEncoderViT(enc_cfg)
        _load_strict(net, enc_sd, src, fmt, model, overrides, prefix="")
        return net, fmt, arch
    if fmt in ("sam", "efficient_sam", "transformers"):
        if fmt == "efficient_sam":
            ours = from_efficient_sam_layout(sd)
        elif fmt == "transformers":
            ours = from_transformers_layout(sd)
        else:
            ours = sd
        cfg, arch = _sam_config(src, model, overrides)
        if cfg is None:
            name = infer_model_name(ours)
            cfg, arch = get_config(name, **overrides), name
        net = Sam(cfg)
        _load_strict(net, ours, src, fmt, model, overrides)
        return net, fmt, arch
    keys = sorted(sd)
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "")
    known = "\n".join(f"  - {name}: {desc}" for name, desc in KNOWN_FORMATS.items())
    raise CheckpointError(
        f"{src.label}: unknown checkpoint format (keys: {shown}). Known formats:\n{known}"
    )


def _load_strict(
    net: nn.Module, sd: Mapping[str, torch.Tensor], src: _Source, fmt: str, model: str | None, overrides: dict,
    prefix: str = "image_encoder.",
) -> None:
    try:
        check_state_dict(net, sd, src.label, layout=fmt)
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
    net.load_state_dict(sd, strict=True)


_HQ_MODULES = r"mask_decoder\.(hf_token|hf_mlp|compress_vit_feat|embedding_encoder|embedding_maskfeature)\."


def _load_hq(sd: Mapping[str, torch.Tensor], src: _Source, base: str, overrides: dict) -> nn.Module:
    """HQ-SAM file on the SAM `base` (inferred from its unchanged SAM keys, or model=): the HQ model is
    built by `hq_adapter.build_hq_model(base, checkpoint=path, **overrides)` when that exists."""
    hq_modules = sorted({m.group(1) for k in sd if (m := re.match(_HQ_MODULES, k))})
    try:
        import hq_adapter

        build = getattr(hq_adapter, "build_hq_model", None)
    except ModuleNotFoundError as e:
        if e.name != "hq_adapter":
            raise
        build = None
    if build is None:
        raise UnsupportedCheckpointError(
            f"{src.label} is an HQ-SAM checkpoint (base model {base}; HQ modules mask_decoder."
            f"{{{','.join(hq_modules)}}}). HQ models come with the hq_adapter package "
            f"(hq_adapter.build_hq_model), which is not available in this installation yet; until then "
            f"HQ-SAM files cannot be loaded."
        )
    net = build(base, checkpoint=str(src.weights), **overrides)
    return net


# ------------------------------------------------------------------------------------------------
# Resolution: local file / local directory / Hub repo


def _resolve(
    name_or_path: str | os.PathLike,
    *,
    filename: str | None,
    revision: str | None,
    cache_dir: str | os.PathLike | None,
    local_files_only: bool,
    token: str | bool | None,
    force_download: bool,
) -> _Source:
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_file():
        if filename is not None:
            raise ValueError(f"filename= selects a file inside a repo or directory, but {path} is already a file")
        return _Source(path, str(path), _sibling_config(path))
    if path.is_dir():
        return _resolve_dir(path, filename)
    name = os.fspath(name_or_path)
    if filename is None and ":" in name:  # "org/name:path/in/repo"
        name, filename = name.split(":", 1)
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    looks_like_file = name.endswith(CHECKPOINT_SUFFIXES) or name.startswith((".", "/", "~"))
    try:
        if looks_like_file:
            raise HFValidationError(name)
        validate_repo_id(name)
    except HFValidationError:
        raise CheckpointNotFoundError(
            f"{os.fspath(name_or_path)!r} is neither an existing file or directory nor a Hub repo id (org/name)"
        ) from None
    return _resolve_hub(
        name, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
        token=token, force_download=force_download,
    )


def _read_config(path: Path, label: str) -> dict | None:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{label}: could not read {path.name} ({e}); the file may be corrupt") from e
    return cfg if isinstance(cfg, dict) else None


def _sibling_config(weights: Path) -> dict | None:
    """config.json next to a `model.safetensors` / `pytorch_model.bin` (a saved or downloaded folder)."""
    cfg = weights.parent / CONFIG_NAME
    if weights.name in (WEIGHTS_NAME, PT_WEIGHTS_NAME) and cfg.is_file():
        return _read_config(cfg, str(weights))
    return None


def _resolve_dir(path: Path, filename: str | None) -> _Source:
    if filename is not None:
        weights = path / filename
        if not weights.is_file():
            raise CheckpointNotFoundError(f"no file {filename!r} in {path}")
        return _Source(weights, str(weights), _sibling_config(weights))
    for name in (WEIGHTS_NAME, PT_WEIGHTS_NAME):
        if (path / name).is_file():
            return _Source(path / name, str(path), _sibling_config(path / name))
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if len(candidates) == 1:
        return _Source(candidates[0], str(candidates[0]))
    if not candidates:
        raise CheckpointNotFoundError(
            f"{path} holds no checkpoint: expected {WEIGHTS_NAME} (+ {CONFIG_NAME}, our save_pretrained format), "
            f"{PT_WEIGHTS_NAME}, or a single {'/'.join(CHECKPOINT_SUFFIXES)} file"
        )
    raise CheckpointError(
        f"{path} holds several checkpoints ({', '.join(p.name for p in candidates)}); choose one with filename="
    )


def _resolve_hub(
    repo_id: str,
    filename: str | None,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike | None,
    local_files_only: bool,
    token: str | bool | None,
    force_download: bool,
) -> _Source:
    kw = dict(
        revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
        force_download=force_download,
    )
    rev = revision or "main"
    if filename is not None:
        weights = _download(repo_id, filename, **kw)
        src = _Source(weights, f"{repo_id}/{filename}@{rev}")
        if posixpath.basename(filename) in (WEIGHTS_NAME, PT_WEIGHTS_NAME):
            src.config = _download_config(repo_id, posixpath.join(posixpath.dirname(filename), CONFIG_NAME), src, kw)
        return src
    known = KNOWN_REPOS.get(repo_id)
    if known is not None and not ({WEIGHTS_NAME, PT_WEIGHTS_NAME} & set(known)):
        files = "\n".join(f"  - {f}: {what}" for f, what in known.items())
        raise CheckpointError(
            f"{repo_id} holds several checkpoints; choose one with filename= "
            f"(esam-convert: {repo_id}:FILE):\n{files}"
        )
    not_cached: list[tuple[str, Exception]] = []
    weights = None
    err = _errors()
    for name in (WEIGHTS_NAME, PT_WEIGHTS_NAME):
        try:
            weights = _hf_download(repo_id, name, kw)
            break
        except err.LocalEntryNotFoundError as e:
            not_cached.append((name, e))
        except (err.RevisionNotFoundError, err.RepositoryNotFoundError) as e:
            raise _missing_error(e, repo_id, name, rev) from None
        except err.EntryNotFoundError:
            continue
    if weights is None:
        if not_cached:
            raise _not_cached_error(repo_id, [n for n, _ in not_cached], revision, cache_dir, local_files_only,
                                    not_cached[0][1])
        raise CheckpointNotFoundError(
            f"{repo_id} (revision {rev}) has neither {WEIGHTS_NAME} nor {PT_WEIGHTS_NAME}; pass filename= "
            f"(the checkpoint's path in the repo)"
        )
    src = _Source(weights, f"{repo_id}/{weights.name}@{rev}")
    src.config = _download_config(repo_id, CONFIG_NAME, src, kw)
    return src


def _errors():
    from huggingface_hub import errors

    return errors


def _hf_download(repo_id: str, filename: str, kw: dict) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, **kw))


def _download(repo_id: str, filename: str, **kw: Any) -> Path:
    """One Hub file through the huggingface_hub cache, with errors a user can act on (no retries here)."""
    err = _errors()
    rev = kw.get("revision") or "main"
    try:
        return _hf_download(repo_id, filename, kw)
    except err.LocalEntryNotFoundError as e:
        raise _not_cached_error(repo_id, [filename], kw.get("revision"), kw.get("cache_dir"),
                                kw.get("local_files_only", False), e) from None
    except (err.EntryNotFoundError, err.RevisionNotFoundError, err.RepositoryNotFoundError) as e:
        raise _missing_error(e, repo_id, filename, rev) from None


def _missing_error(e: Exception, repo_id: str, filename: str, rev: str) -> CheckpointNotFoundError:
    err = _errors()
    if isinstance(e, err.RevisionNotFoundError):
        return CheckpointNotFoundError(f"{repo_id} has no revision {rev!r} (branch, tag or commit)")
    if isinstance(e, err.RepositoryNotFoundError):
        return CheckpointNotFoundError(
            f"Hub repo {repo_id!r} not found, or it is private/gated (log in with `hf auth login`)"
        )
    known = KNOWN_REPOS.get(repo_id)
    hint = f"; known files: {', '.join(known)}" if known else ""
    return CheckpointNotFoundError(f"{repo_id} (revision {rev}) has no file {filename!r}{hint}")


def _download_config(repo_id: str, filename: str, src: _Source, kw: dict) -> dict | None:
    err = _errors()
    try:
        path = _hf_download(repo_id, filename, kw)
    except err.LocalEntryNotFoundError:
        src.notes.append(
            f"{repo_id}: {filename} is not in the local cache; the architecture is inferred from the weights' "
            f"shapes (download {filename} too if this is an efficient_sam save_pretrained repo)"
        )
        return None
    except (err.EntryNotFoundError, err.RevisionNotFoundError, err.RepositoryNotFoundError):
        return None
    return _read_config(path, src.label)


def _not_cached_error(
    repo_id: str, files: list[str], revision: str | None, cache_dir: Any, local_files_only: bool, cause: Exception
) -> NotCachedError:
    from huggingface_hub import constants

    cache = cache_dir or constants.HF_HUB_CACHE
    if constants.HF_HUB_OFFLINE:
        reason = "offline mode is on (HF_HUB_OFFLINE=1)"
        fix = "unset HF_HUB_OFFLINE where the Hub is reachable, or download it first:"
    elif local_files_only:
        reason = "local_files_only=True"
        fix = "download it first:"
    else:
        root = cause.__cause__ or cause
        reason = f"the Hub could not be reached ({type(root).__name__}: {str(root).splitlines()[0][:200] if str(root) else ''})"
        fix = "download it where the Hub is reachable:"
    rev_flag = f" --revision {revision}" if revision else ""
    return NotCachedError(
        f"{repo_id}: {' / '.join(files)} (revision {revision or 'main'}) is not in the local Hugging Face cache "
        f"({cache}) and cannot be downloaded: {reason}. To use it, {fix}\n"
        f"    hf download {repo_id} {files[0]}{rev_flag}\n"
        f"(`huggingface-cli download ...` with older huggingface_hub), or pass the path of a local copy."
    )
