"""Dataset records: an image and its objects, each loaded on demand; boxes of masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

__all__ = ["DatasetError", "ObjectRecord", "ImageRecord", "mask_to_box", "iter_objects"]


class DatasetError(ValueError):
    """A dataset file that cannot be used as it is (unreadable, malformed, sizes that disagree); the
    message names the file (and the row / column / object where there is one)."""


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x0, y0, x1, y1) of a mask, x1/y1 exclusive (COCO's continuous box); None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass
class ObjectRecord:
    """One annotated object; `mask()` / `ignore()` load on demand (bool HxW)."""

    object_id: str
    load_mask: Callable[[], np.ndarray]
    load_ignore: Callable[[], np.ndarray | None] | None = None
    meta: dict = field(default_factory=dict)

    def mask(self) -> np.ndarray:
        return self.load_mask()

    def ignore(self) -> np.ndarray | None:
        return self.load_ignore() if self.load_ignore is not None else None


@dataclass
class ImageRecord:
    """One image and its objects; `image()` loads HxWx3 uint8 RGB."""

    image_id: str
    path: str
    load_image: Callable[[], np.ndarray]
    objects: list[ObjectRecord]
    size: tuple[int, int] | None = None  # (h, w) when known without decoding
    meta: dict = field(default_factory=dict)

    def image(self) -> np.ndarray:
        return self.load_image()


def iter_objects(records: Sequence[ImageRecord]) -> Iterator[tuple[ImageRecord, ObjectRecord]]:
    for rec in records:
        for obj in rec.objects:
            yield rec, obj
