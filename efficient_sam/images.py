"""The one image reader of the library: a file, its bytes or an open file -> RGB.

`IMAGE_EXTENSIONS` are the suffixes every reader lists as images (mask folders, HQSeg-44K,
SAMI's image folders); `read_rgb` gives HxWx3 uint8, `open_rgb` the same as a PIL image.
Grayscale, palette and RGBA images are converted to RGB (alpha dropped).
"""

from __future__ import annotations

import io
import os
from typing import IO, Union

import numpy as np
from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "open_rgb", "read_rgb"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]


def open_rgb(src: ImageSource) -> Image.Image:
    """A path, encoded bytes or a binary file object -> RGB PIL image (decoded now, file closed)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(src)
    with Image.open(src) as im:
        return im.convert("RGB")


def read_rgb(src: ImageSource) -> np.ndarray:
    """A path, encoded bytes or a binary file object -> HxWx3 uint8 RGB array."""
    return np.array(open_rgb(src))
