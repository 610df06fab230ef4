"""The errors of checkpoint loading (a leaf module: the registry, the loaders and the Hub code raise them)."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that does not fit the model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint does not exist (local path, Hub repo, revision or file)."""


class NotCachedError(CheckpointNotFoundError):
    """A Hub file is not in the local cache and cannot be downloaded (offline or unreachable)."""


class UnsupportedCheckpointError(CheckpointError, NotImplementedError):
    """A recognised checkpoint whose model this installation cannot build (e.g. MobileSAM's TinyViT encoder)."""
