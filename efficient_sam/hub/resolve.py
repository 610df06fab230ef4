"""Where a checkpoint is: a local file, a local directory, or a Hub repo through the `huggingface_hub` cache."""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, CheckpointNotFoundError
from .messages import missing_error, not_cached_error

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
        f"syscv-community/sam-hq-vit-{size}": {WEIGHTS_NAME: f"HQ-SAM on sam_vit_{size[0]} (transformers SamHQModel)"}
        for size in ("base", "large", "huge")
    },
    **{
        f"timm/samvit_{size}_patch16.sa1b": {WEIGHTS_NAME: f"sam_vit_{size[0]} image encoder (timm)",
                                             PT_WEIGHTS_NAME: f"sam_vit_{size[0]} image encoder (timm)"}
        for size in ("base", "large", "huge")
    },
}


@dataclass
class Source:
    """A resolved checkpoint: the local weights file, a label for messages, its config.json (if ours)."""

    weights: Path
    label: str  # for messages: the path, or "repo_id/filename@revision"
    config: dict | None = None
    notes: list[str] = field(default_factory=list)


def resolve(
    name_or_path: str | os.PathLike,
    *,
    filename: str | None,
    revision: str | None,
    cache_dir: str | os.PathLike | None,
    local_files_only: bool,
    token: str | bool | None,
    force_download: bool,
) -> Source:
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_file():
        if filename is not None:
            raise ValueError(f"filename= selects a file inside a repo or directory, but {path} is already a file")
        return Source(path, str(path), _sibling_config(path))
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


def _resolve_dir(path: Path, filename: str | None) -> Source:
    if filename is not None:
        weights = path / filename
        if not weights.is_file():
            raise CheckpointNotFoundError(f"no file {filename!r} in {path}")
        return Source(weights, str(weights), _sibling_config(weights))
    for name in (WEIGHTS_NAME, PT_WEIGHTS_NAME):
        if (path / name).is_file():
            return Source(path / name, str(path), _sibling_config(path / name))
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if len(candidates) == 1:
        return Source(candidates[0], str(candidates[0]))
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
) -> Source:
    hub = _Hub(dict(
        revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
        force_download=force_download,
    ))
    rev = revision or "main"
    if filename is not None:
        weights = _download(hub, repo_id, filename)
        src = Source(weights, f"{repo_id}/{filename}@{rev}")
        if posixpath.basename(filename) in (WEIGHTS_NAME, PT_WEIGHTS_NAME):
            src.config = _download_config(hub, repo_id, posixpath.join(posixpath.dirname(filename), CONFIG_NAME), src)
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
            weights = hub.download(repo_id, name)
            break
        except (err.LocalEntryNotFoundError, _Unreachable) as e:
            not_cached.append((name, e))
        except (err.RevisionNotFoundError, err.RepositoryNotFoundError) as e:
            raise missing_error(e, repo_id, name, rev, KNOWN_REPOS.get(repo_id)) from None
        except err.EntryNotFoundError:
            continue
    if weights is None:
        if not_cached:
            raise not_cached_error(repo_id, [n for n, _ in not_cached], revision, cache_dir, local_files_only,
                                    hub.unreachable or not_cached[0][1])
        raise CheckpointNotFoundError(
            f"{repo_id} (revision {rev}) has neither {WEIGHTS_NAME} nor {PT_WEIGHTS_NAME}; pass filename= "
            f"(the checkpoint's path in the repo)"
        )
    src = Source(weights, f"{repo_id}/{weights.name}@{rev}")
    src.config = _download_config(hub, repo_id, CONFIG_NAME, src)
    return src


def _errors():
    from huggingface_hub import errors

    return errors


class _Unreachable(Exception):
    """The Hub could not be reached for a file that is not cached (the connection error is `__cause__`)."""


def _is_network_error(e: BaseException) -> bool:
    """A connection failure or timeout (httpx / requests class names), not an HTTP answer."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ConnectionError",
                         "Timeout", "ProxyError"})


class _Hub:
    """The Hub files of one `resolve` call, through the huggingface_hub cache, failing fast without a network.

    `hf_hub_download` retries a file that is not cached 5 times over ~23 s after a connection error
    (and a repo lookup tries up to two weights files plus config.json). So before downloading a file
    that is not in the cache, one HEAD request without retries checks that the Hub answers; after the
    first connection error every remaining file of this call comes from the cache only. Cached files
    go straight to `hf_hub_download` (which falls back to the cache at once when offline)."""

    def __init__(self, kw: dict[str, Any]) -> None:
        self.kw = kw
        self.unreachable: BaseException | None = None  # the first connection error

    def download(self, repo_id: str, filename: str) -> Path:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

        kw = self.kw
        if self.unreachable is not None:
            kw = {**kw, "local_files_only": True}
            try:
                return Path(hf_hub_download(repo_id, filename, **kw))
            except _errors().LocalEntryNotFoundError:
                raise _Unreachable(f"{repo_id}/{filename}") from self.unreachable
        if not (kw["local_files_only"] or constants.HF_HUB_OFFLINE or kw["force_download"]):
            cached = try_to_load_from_cache(repo_id, filename, cache_dir=kw["cache_dir"], revision=kw["revision"])
            if not isinstance(cached, str):
                self._probe(repo_id, filename)
        return Path(hf_hub_download(repo_id, filename, **kw))

    def _probe(self, repo_id: str, filename: str) -> None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        try:
            get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=self.kw["revision"]),
                                 token=self.kw["token"], retry_on_errors=False)
        except Exception as e:  # an HTTP answer (404, 401, ...): hf_hub_download raises its proper error
            if _is_network_error(e):
                self.unreachable = e
                raise _Unreachable(f"{repo_id}/{filename}") from e


def _download(hub: _Hub, repo_id: str, filename: str) -> Path:
    """One Hub file through the huggingface_hub cache, with errors a user can act on (no retries here)."""
    err = _errors()
    kw = hub.kw
    rev = kw.get("revision") or "main"
    try:
        return hub.download(repo_id, filename)
    except (err.LocalEntryNotFoundError, _Unreachable) as e:
        raise not_cached_error(repo_id, [filename], kw.get("revision"), kw.get("cache_dir"),
                                kw.get("local_files_only", False), hub.unreachable or e) from None
    except (err.EntryNotFoundError, err.RevisionNotFoundError, err.RepositoryNotFoundError) as e:
        raise missing_error(e, repo_id, filename, rev, KNOWN_REPOS.get(repo_id)) from None


def _download_config(hub: _Hub, repo_id: str, filename: str, src: Source) -> dict | None:
    err = _errors()
    try:
        path = hub.download(repo_id, filename)
    except (err.LocalEntryNotFoundError, _Unreachable):
        src.notes.append(
            f"{repo_id}: {filename} is not in the local cache; the architecture is inferred from the weights' "
            f"shapes (download {filename} too if this is an efficient_sam save_pretrained repo)"
        )
        return None
    except (err.EntryNotFoundError, err.RevisionNotFoundError, err.RepositoryNotFoundError):
        return None
    return _read_config(path, src.label)
