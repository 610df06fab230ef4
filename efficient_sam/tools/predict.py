"""esam-predict: segment one image with points and/or a box and write the mask drawn on the image.

    esam-predict --model efficient_sam_vitt --checkpoint efficient_sam_vitt.pt \
        --image assets/photos/dogs.jpg --point 580,350 --point 650,350 --out dogs_mask.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

import efficient_sam as es
from efficient_sam.predictor import EFFICIENT_SAM_LABELS, as_rgb_uint8

# Every label some model takes; the model's own set (SAM: -1, 0, 1) is checked by the predictor.
POINT_LABELS = EFFICIENT_SAM_LABELS


def _floats(text: str, n: tuple[int, ...]) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if len(vals) not in n:
        raise argparse.ArgumentTypeError(f"needs {' or '.join(map(str, n))} numbers, got {text!r}")
    if not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"must be finite numbers, got {text!r}")
    return vals


def _point(text: str) -> tuple[float, float, int]:
    """X,Y[,LABEL] -> (x, y, label); the label is an integer (1.0 is 1, 0.5 is refused), 1 by default."""
    vals = _floats(text, (2, 3))
    label = vals[2] if len(vals) == 3 else 1
    if label != int(label) or int(label) not in POINT_LABELS:
        raise argparse.ArgumentTypeError(
            f"the label must be an integer, one of {', '.join(map(str, POINT_LABELS))} (1 foreground, "
            f"0 background; EfficientSAM: 2/3 box corners), got {text!r}"
        )
    return vals[0], vals[1], int(label)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esam-predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficient_sam_vitt", help=f"one of {', '.join(es.list_models())}")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="official .pth/.pt or .safetensors weights for --model")
    src.add_argument("--pretrained", help="Hub repo id[:filename] or local path, loaded with es.from_pretrained")
    p.add_argument("--image", required=True, help="input image (any PIL-readable file)")
    p.add_argument("--point", action="append", default=[], type=_point, metavar="X,Y[,LABEL]",
                   help="prompt point in pixels; label 1 (default) or 0 (EfficientSAM also 2/3: box corners); "
                        "repeatable")
    p.add_argument("--box", type=lambda s: _floats(s, (4,)), metavar="X0,Y0,X1,Y1")
    p.add_argument("--single-mask", action="store_true",
                   help="use the single-mask output instead of the best of 3 (SAM decoders only)")
    p.add_argument("--out", required=True, help="output PNG: the image with the mask drawn on it")
    p.add_argument("--mask-out", help="optional PNG of the binary mask (0/255)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _check_out(parser: argparse.ArgumentParser, flag: str, path: str | None) -> None:
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"{flag}: folder {folder!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext not in Image.registered_extensions():
        parser.error(f"{flag}: {path!r} has no image extension PIL can write (use .png)")


def overlay(image: np.ndarray, mask: np.ndarray, points: list, box: list | None) -> Image.Image:
    """Image with the mask tinted blue, its outline, and the prompts drawn."""
    color = np.array([30, 144, 255], dtype=np.float32)
    out = image.astype(np.float32)
    out[mask] = 0.45 * out[mask] + 0.55 * color
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    out[edge] = color
    pil = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    r = max(4, round(max(image.shape[:2]) / 150))
    for x, y, label in points:
        fill = (40, 200, 60) if label == 1 else (230, 40, 40)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255), width=max(1, r // 3))
    if box is not None:
        draw.rectangle(box, outline=(40, 200, 60), width=max(2, r // 2))
    return pil


def main(argv: list[str] | None = None) -> int:
    """Bad arguments (labels, numbers, files, prompts the model refuses) exit 2 with a one-line
    `esam-predict: error: ...`, as argparse does, and no traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.point and args.box is None:
        parser.error("give at least one --point or a --box")
    if not args.pretrained and args.model not in es.list_models():
        parser.error(f"--model: unknown model {args.model!r}; one of {', '.join(es.list_models())}")
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        parser.error(f"--checkpoint: {args.checkpoint!r} is not a file")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device: not a torch device: {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here (use --device cpu)")
    _check_out(parser, "--out", args.out)
    _check_out(parser, "--mask-out", args.mask_out)
    try:
        with Image.open(args.image) as img:
            image = as_rgb_uint8(img)
    except (FileNotFoundError, IsADirectoryError):
        parser.error(f"--image: no such file {args.image!r}")
    except (UnidentifiedImageError, OSError) as e:
        parser.error(f"--image: cannot read {args.image!r} as an image ({e})")
    except (TypeError, ValueError) as e:  # e.g. a 16-bit image
        parser.error(f"--image {args.image!r}: {e}")
    if args.pretrained:
        model = es.from_pretrained(args.pretrained, device=args.device)
    else:
        if args.checkpoint is None:
            warnings.warn(f"no --checkpoint or --pretrained: {args.model} has random weights", stacklevel=1)
        model = es.build_model(args.model, checkpoint=args.checkpoint, device=args.device)
    points = args.point
    predictor = es.SamPredictor(model)
    predictor.set_image(image)
    multimask = not args.single_mask
    try:
        masks, iou, _ = predictor.predict(
            point_coords=np.array([p[:2] for p in points], dtype=np.float32) if points else None,
            point_labels=np.array([p[2] for p in points]) if points else None,
            box=np.array(args.box, dtype=np.float32) if args.box is not None else None,
            multimask_output=multimask,
        )
    except ValueError as e:  # a prompt the model refuses: outside the image, an inverted box, ...
        parser.error(f"--point / --box: {e}")
    best = int(np.argmax(iou))
    mask = masks[best]
    overlay(image, mask, points, args.box).save(args.out)
    if args.mask_out:
        Image.fromarray(mask.astype(np.uint8) * 255).save(args.mask_out)
    print(f"mask {best} of {len(iou)} (predicted IoU {iou[best]:.3f}), {int(mask.sum())} px -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
