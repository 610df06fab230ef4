"""The messages of Hub failures: what is missing, why it cannot be had, and the command that fixes it."""

from __future__ import annotations

from typing import Any

from ..errors import CheckpointNotFoundError, NotCachedError


def missing_error(
    e: Exception, repo_id: str, filename: str, rev: str, known: dict[str, str] | None = None
) -> CheckpointNotFoundError:
    """`known`: the repo's files we know of (`resolve.KNOWN_REPOS`), listed as a hint."""
    from huggingface_hub import errors as err

    if isinstance(e, err.RevisionNotFoundError):
        return CheckpointNotFoundError(f"{repo_id} has no revision {rev!r} (branch, tag or commit)")
    if isinstance(e, err.RepositoryNotFoundError):
        return CheckpointNotFoundError(
            f"Hub repo {repo_id!r} not found, or it is private/gated (log in with `hf auth login`)"
        )
    hint = f"; known files: {', '.join(known)}" if known else ""
    return CheckpointNotFoundError(f"{repo_id} (revision {rev}) has no file {filename!r}{hint}")


def not_cached_error(
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
        reason = (
            f"the Hub could not be reached ({type(root).__name__}: "
            f"{str(root).splitlines()[0][:200] if str(root) else ''}); gave up after the first connection error. "
            f"With HF_HUB_OFFLINE=1 only the cache is used and a miss is reported at once, without network tries"
        )
        fix = "download it where the Hub is reachable:"
    rev_flag = f" --revision {revision}" if revision else ""
    return NotCachedError(
        f"{repo_id}: {' / '.join(files)} (revision {revision or 'main'}) is not in the local Hugging Face cache "
        f"({cache}) and cannot be downloaded: {reason}. To use it, {fix}\n"
        f"    hf download {repo_id} {files[0]}{rev_flag}\n"
        f"(`huggingface-cli download ...` with older huggingface_hub), or pass the path of a local copy."
    )
