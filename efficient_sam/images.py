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

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "open_rgb", "read_rgb", "as_rgb_uint8"]

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


def as_rgb_uint8(image, image_format: str = "RGB") -> np.ndarray:
    """PIL image or HxW / HxWx1 / HxWx3 / HxWx4 uint8 array -> contiguous HxWx3 uint8 RGB.

    `image_format="BGR"` flips the channels of arrays and PIL images alike. PIL images with more than
    8 bits per channel (modes I, I;16*, F) are refused, as uint16 / int32 / float arrays are:
    `convert("RGB")` would clip them to 0-255.
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if isinstance(image, Image.Image):
        if image.mode in ("I", "F") or image.mode.startswith("I;"):
            raise TypeError(
                f"image has PIL mode {image.mode!r} (16-bit, 32-bit or float values), which convert('RGB') "
                f"clips to 0-255; scale it to 8 bits first, e.g. (np.asarray(img) / 257).round().astype(np.uint8) "
                f"for a full-range 16-bit image, (np.asarray(img) * 255).round().astype(np.uint8) for a [0, 1] "
                f"float image"
            )
        try:
            arr = np.asarray(image.convert("RGB"))
        except ValueError as e:  # e.g. "conversion from La to L not supported"
            raise ValueError(f"image: cannot convert PIL mode {image.mode!r} to RGB ({e})") from None
    else:
        if hasattr(image, "detach") and hasattr(image, "numpy"):  # a torch tensor, without importing torch
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            hint = " (open a file with PIL.Image.open first)" if isinstance(image, (str, bytes, os.PathLike)) else ""
            raise TypeError(f"expected a numpy array or PIL image, got {type(image).__name__}{hint}")
        if image.dtype != np.uint8:
            raise TypeError(
                f"expected a uint8 image (values 0-255), got dtype {image.dtype}; "
                f"convert first, e.g. (img * 255).round().astype(np.uint8) for a [0, 1] float image"
            )
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            chw = image.ndim == 3 and image.shape[0] in (1, 3, 4)
            raise ValueError(
                f"expected an HxWx3 RGB image (HxW grayscale and HxWx4 RGBA are converted), got shape {image.shape}"
                + ("; a CxHxW tensor? permute(1, 2, 0) it first" if chw else "")
            )
        if image.shape[2] == 1:
            arr = np.repeat(image, 3, axis=2)
        elif image.shape[2] == 4:
            arr = image[:, :, :3]  # PIL's RGBA -> RGB: alpha is dropped
        else:
            arr = image
    if image_format == "BGR":
        arr = arr[:, :, ::-1]
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr)
