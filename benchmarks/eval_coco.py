"""`esam-eval --protocol coco`: COCO / LVIS box / 1-point mIoU and zero-shot instance AP of a model.

    esam-eval --protocol coco --model efficient_sam_vitt --checkpoint efficient_sam_vitt.pt \\
              --annotations instances_val2017.json --images val2017 [--coco-prompt point]
    esam-eval --protocol coco ... --detections vitdet_h_val2017.json   # AP, AP50, ..., Boundary AP

`add_arguments(parser)` adds the options (skipping any the parser already has, e.g. `--images`,
`--limit`); `run(args, model)` evaluates with `efficient_sam.evaluation.coco` (see there for the
protocol) and returns the results dict. Under `accelerate launch` (WORLD_SIZE > 1) the images are
split over the processes and the results merged exactly; every process returns the same dict, so
write files from the main process only (`run` does so for `--coco-results`).
`python -m benchmarks.eval_coco --model M ...` runs it alone (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from efficient_sam.datasets import DatasetError
from efficient_sam.evaluation.coco import COCO_PROMPTS, evaluate_coco, evaluate_coco_distributed

__all__ = ["add_arguments", "run", "main"]


def _add(parser: argparse.ArgumentParser, flag: str, **kw) -> None:
    if flag not in parser._option_string_actions:  # e.g. esam-eval's own --images / --limit
        parser.add_argument(flag, **kw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The COCO protocol's options (on `parser`, skipping flags it already defines)."""
    _add(parser, "--annotations", default=None, metavar="JSON",
         help="COCO / LVIS instances JSON (or a folder with annotations/); default: --data")
    _add(parser, "--images", default=None, metavar="DIR", help="image folder (default: found next to the JSON)")
    _add(parser, "--detections", default=None, metavar="JSON",
         help="COCO results file [{image_id, category_id, bbox, score}]: segment its boxes and report segm AP")
    _add(parser, "--coco-prompt", choices=COCO_PROMPTS, default="box",
         help="GT prompt without --detections: the GT box, or 1 point (farthest from the mask boundary)")
    _add(parser, "--min-score", type=float, default=0.0, help="--detections: keep boxes with score >= this")
    _add(parser, "--no-boundary-ap", action="store_true", help="--detections: skip Boundary AP (faster)")
    _add(parser, "--coco-results", default=None, metavar="FILE",
         help="--detections: write our masks as COCO segm results (for the LVIS API / eval servers)")
    _add(parser, "--max-prompts", type=int, default=64, help="prompts per model call")
    _add(parser, "--dilation-ratio", type=float, default=0.02, help="boundary width / image diagonal")
    _add(parser, "--limit", type=int, default=None, help="only the first N images")
    _add(parser, "--no-progress", action="store_true")


def run(args: argparse.Namespace, model) -> dict:
    """Evaluate `model` as the parsed `args` say -> {"protocol": "coco", "mode", ...} (GT prompts:
    miou, mbiou, miou_small/medium/large, n_*; detections: AP, AP50, AP75, AP_S/M/L, boundary_*).
    Bad data raises `SystemExit` with a one-line message."""
    annotations = getattr(args, "annotations", None) or getattr(args, "data", None)
    if not annotations:
        raise SystemExit("esam-eval: --protocol coco needs --annotations JSON (a COCO / LVIS instances file)")
    if args.detections and args.coco_prompt != "box":
        raise SystemExit("esam-eval: --detections prompts with the detection boxes; drop --coco-prompt point")
    kwargs = dict(images=args.images, detections=args.detections, prompt=args.coco_prompt,
                  max_prompts=args.max_prompts, dilation_ratio=args.dilation_ratio,
                  boundary_ap=not args.no_boundary_ap, min_score=args.min_score, limit=args.limit,
                  progress=not args.no_progress, keep_results=bool(args.coco_results))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        res = (evaluate_coco_distributed if distributed else evaluate_coco)(model, annotations, **kwargs)
    except (DatasetError, OSError) as e:  # FileNotFoundError: missing images
        raise SystemExit(f"esam-eval: {e}") from None
    results = res.pop("results", None)
    if args.coco_results and results is not None and is_main_process():
        Path(args.coco_results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.coco_results).write_text(json.dumps(results))
    return {"protocol": "coco", **res, "images": None if args.images is None else str(args.images),
            "detections": args.detections}


def is_main_process() -> bool:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True
    from accelerate import PartialState

    return PartialState().is_main_process


def main(argv: list[str] | None = None) -> int:
    """Standalone: `python -m benchmarks.eval_coco --model M [--checkpoint C] [--set K=V] --annotations ...`;
    random-weight models are seeded (`--seed`) so that every process builds the same one."""
    import torch

    from efficient_sam.config import parse_override
    from efficient_sam.evaluation import DTYPES, load_model

    p = argparse.ArgumentParser(prog="eval_coco", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here (main process)")
    add_arguments(p)
    args = p.parse_args(argv)
    device = args.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.device(device).type == "cuda":
        from accelerate import PartialState

        device = str(PartialState().device)
    torch.manual_seed(args.seed)
    model = load_model(args.model, args.checkpoint, dict(args.overrides), device, args.dtype)
    res = run(args, model)
    if is_main_process():
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=2))
        print(json.dumps({k: v for k, v in res.items() if k not in ("per_item", "skipped")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
