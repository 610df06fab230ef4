"""Data pieces shared by the trainers: per-sample generators and skipping unusable records.

- `sample_rng(seed, *keys)`: the generator of one sample, a function of the seed and the sample's
  keys only (e.g. epoch and index), so a sample does not depend on workers, processes or resumption.
- `SkipRecord`: a record that cannot be used; `skip_on_error()` turns any error into one.
- `Skipper`: the one skip-and-count loop. An unusable record is warned about once (by name) and
  counted (`total`); `usable` walks a stream, `first_usable` replaces a map-style item by the next
  usable one (i + 1, i + 2, ... at most `MAX_TRIES`). The per-sample `skipped` count it returns is
  what the trainers log as `data/skipped_images`: **unusable records (files), each counted once per
  pass over the data** -- a stream counts the records dropped before each sample; a map-style
  sample counts 1 when its own record is unusable (not the records tried after it, which are
  counted by their own index), so 2 bad files are 2 per epoch, however many samples tried them.
- `RecordSamples`: map-style samples of `efficient_sam.datasets` records built by a sample builder.
"""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ..datasets import ImageRecord
from .config import ConfigError, TrainingError

__all__ = [
    "MAX_TRIES", "SkipRecord", "skip_on_error", "sample_rng", "Skipper", "RecordSamples", "total_skipped",
]

T = TypeVar("T")
S = TypeVar("S")

MAX_TRIES = 64  # unusable records in a row before a map-style dataset gives up


class SkipRecord(Exception):
    """A record that cannot be used (unreadable image, broken annotation, no usable mask)."""


@contextmanager
def skip_on_error() -> Iterator[None]:
    """Any error inside becomes `SkipRecord("<type>: <message>")`; a SkipRecord passes unchanged."""
    try:
        yield
    except SkipRecord:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding error makes the record unusable
        raise SkipRecord(f"{type(e).__name__}: {e}") from e


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """The generator of one sample: `np.random.default_rng([seed, *keys])`, a function of its keys only."""
    return np.random.default_rng([seed, *keys])


def _caller_stacklevel() -> int:
    """`warnings.warn` stacklevel (from `Skipper.skip`) of the first frame outside this module."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


class Skipper:
    """Skips unusable records: each is warned about once (by name) and counted in `total`.

    `message` is formatted with `name`, `err` and `kind` (the error's type name); `errors` are the
    exceptions that mean "unusable" (others propagate)."""

    def __init__(
        self, message: str = "skipping {name}: {err}", errors: tuple[type[BaseException], ...] = (SkipRecord,)
    ) -> None:
        self.message, self.errors = message, errors
        self.total = 0
        self._warned: set[str] = set()

    def skip(self, name: str, err: BaseException) -> None:
        self.total += 1
        if name not in self._warned:
            self._warned.add(name)
            text = self.message.format(name=name, err=err, kind=type(err).__name__)
            warnings.warn(text, stacklevel=_caller_stacklevel())

    def usable(
        self,
        items: Iterable[T],
        build: Callable[[T], S],
        name: Callable[[T], str] = str,
        counted: Callable[[T], bool] | None = None,
    ) -> Iterator[tuple[int, S]]:
        """(skipped, build(item)) for each item that builds; `skipped` = the items skipped since the
        previous one. An item for which `counted(item)` is false is dropped silently (not counted)."""
        skipped = 0
        for item in items:
            try:
                out = build(item)
            except self.errors as e:
                if counted is None or counted(item):
                    self.skip(name(item), e)
                    skipped += 1
                continue
            yield skipped, out
            skipped = 0

    def first_usable(
        self, items: Sequence[T], index: int, build: Callable[[T, int], S], name: Callable[[T], str], error: str
    ) -> tuple[int, S]:
        """Map-style: (skipped, build(items[j % n], j)) for the first j of index, index + 1, ... that
        builds, trying at most min(n, MAX_TRIES); `skipped` is 1 when items[index] itself is
        unusable, else 0 (the replacements tried are counted by their own index, so every unusable
        record counts once per epoch). `TrainingError(error)` (formatted with `index` and `tries`)
        when none builds."""
        n = len(items)
        tries = ((j, items[j % n]) for j in range(index, index + min(n, MAX_TRIES)))
        for skipped, out in self.usable(tries, lambda t: build(t[1], t[0]), lambda t: name(t[1])):
            return min(skipped, 1), out
        raise TrainingError(error.format(index=index, tries=min(n, MAX_TRIES)))


def total_skipped(samples: Sequence[dict[str, Any]]) -> torch.Tensor:
    """The 0-d sum of the samples' `skipped` counts (a batch's `skipped`)."""
    return torch.tensor(sum(s.get("skipped", 0) for s in samples))


class RecordSamples(Dataset):
    """Map-style over `efficient_sam.datasets` records; sample i is `builder(record i, sample_rng(seed,
    epoch, i))`, and an unusable record (the builder raises SkipRecord) is replaced by the next usable
    one (i + 1, i + 2, ...); the sample's `skipped` is 1 when record i was unusable (each unusable
    record counts once per epoch)."""

    def __init__(self, records: list[ImageRecord], builder: Callable[..., dict[str, Any]], seed: int) -> None:
        if not records:
            raise ConfigError("data.train: no images with masks in the training data")
        self.records, self.builder, self.seed = records, builder, seed
        self.epoch = 0
        self.skipper = Skipper()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        skipped, sample = self.skipper.first_usable(
            self.records, index, lambda rec, j: self.builder(rec, sample_rng(self.seed, self.epoch, j)),
            name=lambda rec: rec.path, error="{tries} unusable records in a row from index {index}: check data.train",
        )
        return {**sample, "skipped": skipped}
