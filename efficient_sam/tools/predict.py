"""esam-predict: segment one image with points and/or a box and write the mask drawn on the image.

    esam-predict --model efficient_sam_vitt --checkpoint efficient_sam_vitt.pt \
        --image ../shared/data/photos/dogs.jpg --point 580,350 --point 650,350 --out dogs_mask.png
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import torch
from PIL import Image, ImageDraw

import efficient_sam as es


def _floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if len(vals) not in n:
        raise argparse.ArgumentTypeError(f"{what} needs {' or '.join(map(str, n))} numbers, got {text!r}")
    return vals


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="esam-predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficient_sam_vitt", help=f"one of {', '.join(es.list_models())}")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="official .pth/.pt or .safetensors weights for --model")
    src.add_argument("--pretrained", help="Hub repo id[:filename] or local path, loaded with es.from_pretrained")
    p.add_argument("--image", required=True, help="input image (any PIL-readable file)")
    p.add_argument("--point", action="append", default=[], type=lambda s: _floats(s, (2, 3), "--point"),
                   metavar="X,Y[,LABEL]", help="prompt point in pixels; label 1 (default) or 0; repeatable")
    p.add_argument("--box", type=lambda s: _floats(s, (4,), "--box"), metavar="X0,Y0,X1,Y1")
    p.add_argument("--single-mask", action="store_true",
                   help="use the single-mask output instead of the best of 3 (SAM decoders only)")
    p.add_argument("--out", required=True, help="output PNG: the image with the mask drawn on it")
    p.add_argument("--mask-out", help="optional PNG of the binary mask (0/255)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


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
    args = parse_args(argv)
    if not args.point and args.box is None:
        print("esam-predict: give at least one --point or a --box", file=sys.stderr)
        return 2
    if args.pretrained:
        model = es.from_pretrained(args.pretrained, device=args.device)
    else:
        if args.checkpoint is None:
            warnings.warn(f"no --checkpoint or --pretrained: {args.model} has random weights", stacklevel=1)
        model = es.build_model(args.model, checkpoint=args.checkpoint, device=args.device)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    points = [(p[0], p[1], int(p[2]) if len(p) == 3 else 1) for p in args.point]
    predictor = es.SamPredictor(model)
    predictor.set_image(image)
    multimask = not args.single_mask
    masks, iou, _ = predictor.predict(
        point_coords=np.array([p[:2] for p in points], dtype=np.float32) if points else None,
        point_labels=np.array([p[2] for p in points]) if points else None,
        box=np.array(args.box, dtype=np.float32) if args.box is not None else None,
        multimask_output=multimask,
    )
    best = int(np.argmax(iou))
    mask = masks[best]
    overlay(image, mask, points, args.box).save(args.out)
    if args.mask_out:
        Image.fromarray(mask.astype(np.uint8) * 255).save(args.mask_out)
    print(f"mask {best} of {len(iou)} (predicted IoU {iou[best]:.3f}), {int(mask.sum())} px -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
