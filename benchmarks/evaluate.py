"""`esam-eval`: single-prompt mIoU and boundary IoU of a promptable model on a segmentation dataset.

    esam-eval --model efficient_sam_vitt --checkpoint efficient_sam_vitt.pt \\
              --data assets/grabcut --prompt box --json out.json

A thin command line over `efficient_sam.evaluation`, where the protocol (`prompts`), the model
interface and the oracle baselines (`models`), the loop (`loop`) and the metrics (`metrics`) live.
The names below are re-exported from there for older imports (`from benchmarks.evaluate import ...`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

import torch

from efficient_sam.config import parse_override
from efficient_sam.datasets import DatasetError, detect_layout, open_dataset
from efficient_sam.evaluation import (  # noqa: F401 - re-exported for older imports
    DTYPES,
    ORACLES,
    PROMPTS,
    BoxOracle,
    GroundTruthOracle,
    PredictorModel,
    PromptModel,
    evaluate,
    evaluate_distributed,
    load_model,
    make_prompts,
    object_rng,
    sample_points,
    use_multimask,
)


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} is not >= {low}")
        return v

    parse.__name__ = f"integer >= {low}"
    return parse


def _ratio(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and 0 <= v <= 1):
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1] (a fraction of the image diagonal)")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esam-eval", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True,
                   help="registered name (e.g. efficient_sam_vitt), local dir/file or Hub repo id; "
                        "or oracle:gt / oracle:box (sanity baselines)")
    p.add_argument("--checkpoint", default=None, help="official checkpoint file for a registered name")
    p.add_argument("--data", required=True, help="dataset: mask folder, COCO JSON (or folder) or SA-1B folder/.tar")
    p.add_argument("--prompt", choices=PROMPTS, default="box")
    p.add_argument("--hq", action="store_true",
                   help="HQ models: score the HQ output alone (hq_token_only, HQ-SAM's validation); default SAM + HQ")
    p.add_argument("--json", default=None, help="write {miou, mbiou, n, per_item, ...} here")
    p.add_argument("--layout", choices=("auto", "masks", "coco", "sa1b"), default="auto")
    p.add_argument("--images", default=None, help="COCO image folder (default: found next to the JSON)")
    p.add_argument("--include-crowd", action="store_true", help="COCO: evaluate iscrowd annotations too")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the point sampling (>= 0)")
    p.add_argument("--limit", type=_int_at_least(1), default=None, help="evaluate only the first N images (N >= 1)")
    p.add_argument("--max-prompts", type=_int_at_least(1), default=64, help="prompts per decoder call (>= 1)")
    p.add_argument("--dilation-ratio", type=_ratio, default=0.02, help="boundary width / image diagonal, in [0, 1]")
    p.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                   metavar="KEY=VALUE", help="config override for a registered name (tests, small configs)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _skip_summary(skipped: list[dict]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in Counter(s["reason"] for s in skipped).most_common())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json and Path(args.json).is_dir():
        parser.error(f"argument --json: {args.json} is a folder; give the path of the JSON file to write")
    try:
        torch.device(args.device)
    except RuntimeError as e:
        parser.error(f"argument --device: {e}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device}: CUDA is not available here (use --device cpu)")
    try:
        layout = detect_layout(args.data) if args.layout == "auto" else args.layout
        kw = {}
        if args.images or args.include_crowd:
            if layout != "coco":
                raise ValueError(f"--images / --include-crowd apply to COCO data, {args.data} is {layout!r}")
            kw = {"image_dir": args.images, "include_crowd": args.include_crowd}
        records = open_dataset(args.data, layout, **kw)
    except (OSError, ValueError) as e:  # FileNotFoundError, DatasetError
        raise SystemExit(f"esam-eval: {e}") from None
    if not records:
        raise SystemExit(f"esam-eval: {args.data} holds no image with an object: nothing to score")
    if args.limit is not None:
        records = records[: args.limit]
    model = load_model(args.model, args.checkpoint, dict(args.overrides), args.device, args.dtype, args.hq)
    try:
        res = evaluate(model, records, args.prompt, args.seed, args.dilation_ratio, args.max_prompts,
                       progress=not args.no_progress)
    except (DatasetError, OSError) as e:
        raise SystemExit(f"esam-eval: {e}") from None
    out = {
        "miou": res["miou"], "mbiou": res["mbiou"], "n": res["n"],
        "model": args.model, "checkpoint": args.checkpoint, "data": str(args.data),
        "layout": layout, **{k: v for k, v in res.items() if k not in ("miou", "mbiou", "n")},
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    skipped = res["skipped"]
    n_objects = res["n"] + len(skipped)
    if res["n"] == 0:
        why = (f"all {n_objects} objects of the {res['n_images']} images were skipped ({_skip_summary(skipped)})"
               if skipped else f"the {res['n_images']} images hold no objects")
        listed = f"; the skipped objects are listed in {args.json}" if args.json and skipped else ""
        raise SystemExit(f"esam-eval: nothing scored in {args.data}: {why}, so mIoU is undefined{listed}")
    summary = {k: v for k, v in out.items() if k not in ("per_item", "skipped")}
    print(json.dumps(summary, indent=2))
    if skipped:
        where = f"listed under \"skipped\" in {args.json}" if args.json else "--json FILE lists them"
        print(f"esam-eval: skipped {len(skipped)} of {n_objects} objects ({_skip_summary(skipped)}); {where}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
