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
import os
import sys
from collections import Counter
from pathlib import Path

import torch

import efficient_sam as es
from benchmarks import eval_clicks, eval_coco
from efficient_sam.config import parse_override
from efficient_sam.datasets import DatasetError, detect_layout, open_dataset
from efficient_sam.datasets.interactive import INTERACTIVE_LAYOUTS, detect_interactive_layout, open_interactive_dataset
from efficient_sam.evaluation.clicks import load_click_model
from efficient_sam.evaluation.everything import evaluate_everything
from efficient_sam.tools.amg import add_generator_arguments, generator_kwargs
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


PROTOCOLS = ("prompts", "clicks", "everything", "coco")
LAYOUTS = ("auto", "masks", "coco", "sa1b", *INTERACTIVE_LAYOUTS, "grabcut", "berkeley")


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
    p.add_argument("--data", required=True,
                   help="dataset: mask folder, COCO JSON (or folder), SA-1B folder/.tar, or (clicks) a GrabCut / "
                        "Berkeley / DAVIS / SBD / PascalVOC folder")
    p.add_argument("--protocol", choices=PROTOCOLS, default="prompts",
                   help="prompts: one box / point prompt per object (default); clicks: the interactive-click "
                        "protocol (NoC@85/90/95); everything: the automatic mask generator's mask recall "
                        "(AR@100/1000) and, with --against, its agreement with another model's generator; coco: GT-box / "
                        "1-point mIoU by object size on a COCO / LVIS JSON (--data), or with --detections zero-shot "
                        "instance AP and Boundary AP")
    p.add_argument("--prompt", choices=PROMPTS, default="box")
    p.add_argument("--hq", action="store_true",
                   help="HQ models: score the HQ output alone (hq_token_only, HQ-SAM's validation); default SAM + HQ")
    p.add_argument("--json", default=None, help="write {miou, mbiou, n, per_item, ...} here")
    p.add_argument("--layout", choices=LAYOUTS, default="auto")
    p.add_argument("--split", default="val", help="SBD / PascalVOC: the image list to read (default val)")
    p.add_argument("--images", default=None, help="COCO image folder (default: found next to the JSON)")
    p.add_argument("--include-crowd", action="store_true", help="COCO: evaluate iscrowd annotations too")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the point sampling and of a random-weight model's init (>= 0)")
    p.add_argument("--limit", type=_int_at_least(1), default=None, help="evaluate only the first N images (N >= 1)")
    p.add_argument("--max-prompts", type=_int_at_least(1), default=64, help="prompts per decoder call (>= 1)")
    p.add_argument("--dilation-ratio", type=_ratio, default=0.02, help="boundary width / image diagonal, in [0, 1]")
    p.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                   metavar="KEY=VALUE", help="config override for a registered name (tests, small configs)")
    p.add_argument("--no-progress", action="store_true")
    eval_clicks.add_arguments(p)
    g = p.add_argument_group("everything protocol")
    g.add_argument("--against", default=None, metavar="MODEL",
                   help="a second model (name, folder, file or Hub id) whose generator output is the reference")
    g.add_argument("--against-checkpoint", default=None)
    g.add_argument("--max-dets", type=_int_at_least(1), nargs="+", default=[100, 1000], help="AR@N (default 100 1000)")
    add_generator_arguments(p)
    eval_coco.add_arguments(p)
    return p


def _skip_summary(skipped: list[dict]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in Counter(s["reason"] for s in skipped).most_common())


def _open(args) -> tuple[list, str]:
    """The records of `--data` (`--limit` applied) and their layout name."""
    interactive = args.layout in (*INTERACTIVE_LAYOUTS, "grabcut", "berkeley")
    try:
        if args.layout == "auto":
            layout = detect_interactive_layout(args.data) or detect_layout(args.data)
        else:
            layout = args.layout
        kw = {}
        if args.images or args.include_crowd:
            if layout != "coco":
                raise ValueError(f"--images / --include-crowd apply to COCO data, {args.data} is {layout!r}")
            kw = {"image_dir": args.images, "include_crowd": args.include_crowd}
        if interactive or layout in INTERACTIVE_LAYOUTS:
            records = open_interactive_dataset(args.data, layout, split=args.split)
        else:
            records = open_dataset(args.data, layout, **kw)
    except (OSError, ValueError) as e:  # FileNotFoundError, DatasetError
        raise SystemExit(f"esam-eval: {e}") from None
    if not records:
        raise SystemExit(f"esam-eval: {args.data} holds no image with an object: nothing to score")
    return (records[: args.limit] if args.limit is not None else records), layout


def _check_args(parser, args) -> None:
    if args.json and Path(args.json).is_dir():
        parser.error(f"argument --json: {args.json} is a folder; give the path of the JSON file to write")
    try:
        torch.device(args.device)
    except RuntimeError as e:
        parser.error(f"argument --device: {e}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device}: CUDA is not available here (use --device cpu)")
    if args.protocol != "clicks" and (args.feed_logits is not None or args.plot):
        parser.error("--feed-logits / --plot belong to --protocol clicks")
    if args.protocol != "everything" and (args.against or args.against_checkpoint or args.fast):
        parser.error("--against / --against-checkpoint / --fast belong to --protocol everything")
    if args.against_checkpoint and not args.against:
        parser.error("--against-checkpoint needs --against")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if args.protocol == "coco":
        return _main_coco(args)
    records, layout = _open(args)
    run = {"prompts": _run_prompts, "clicks": _run_clicks, "everything": _run_everything}[args.protocol]
    torch.manual_seed(args.seed)  # a random-weight model (no --checkpoint) is the same in every run
    try:
        res = run(args, records)
    except (DatasetError, OSError) as e:
        raise SystemExit(f"esam-eval: {e}") from None
    head = {k: res.pop(k) for k in ("miou", "mbiou", "n", "noc", "nof", *(f"AR@{m}" for m in args.max_dets)) if k in res}
    out = {**head, "protocol": args.protocol, "model": args.model, "checkpoint": args.checkpoint,
           "data": str(args.data), "layout": layout, **res}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    skipped = res["skipped"]
    n_objects = out["n"] + len(skipped)
    if out["n"] == 0:
        why = (f"all {n_objects} objects of the {res['n_images']} images were skipped ({_skip_summary(skipped)})"
               if skipped else f"the {res['n_images']} images hold no objects")
        listed = f"; the skipped objects are listed in {args.json}" if args.json and skipped else ""
        score = {"prompts": "mIoU", "clicks": "NoC", "everything": "AR"}[args.protocol]
        raise SystemExit(f"esam-eval: nothing scored in {args.data}: {why}, so {score} is undefined{listed}")
    summary = {k: v for k, v in out.items() if k not in ("per_item", "per_object", "per_image", "skipped")}
    print(json.dumps(summary, indent=2))
    if skipped:
        where = f"listed under \"skipped\" in {args.json}" if args.json else "--json FILE lists them"
        print(f"esam-eval: skipped {len(skipped)} of {n_objects} objects ({_skip_summary(skipped)}); {where}",
              file=sys.stderr)
    return 0


def _main_coco(args) -> int:
    """COCO / LVIS: its own data path (pycocotools' index); under `accelerate launch` every process
    evaluates its share, and the main process writes the merged results."""
    device = args.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.device(device).type == "cuda":
        from accelerate import PartialState

        device = str(PartialState().device)
    torch.manual_seed(args.seed)  # random-weight models: the same on every process
    model = load_model(args.model, args.checkpoint, dict(args.overrides), device, args.dtype, args.hq)
    res = {"model": args.model, "checkpoint": args.checkpoint, **eval_coco.run(args, model)}
    if not eval_coco.is_main_process():
        return 0
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k not in ("per_item", "skipped")}, indent=2))
    return 0


def _run_prompts(args, records) -> dict:
    model = load_model(args.model, args.checkpoint, dict(args.overrides), args.device, args.dtype, args.hq)
    return evaluate(model, records, args.prompt, args.seed, args.dilation_ratio, args.max_prompts,
                    progress=not args.no_progress)


def _run_clicks(args, records) -> dict:
    model = load_click_model(args.model, args.checkpoint, dict(args.overrides), args.device, args.dtype, args.hq,
                             args.feed_logits)
    return eval_clicks.run(args, model, records)


def _generator(args, name: str, checkpoint: str | None):
    model = load_model(name, checkpoint, dict(args.overrides), args.device, args.dtype, args.hq)
    if not hasattr(model, "predictor"):
        raise SystemExit(f"esam-eval: --protocol everything needs a model with a mask generator, not {name}")
    try:
        return es.SamAutomaticMaskGenerator(model.model, **generator_kwargs(args))
    except (ValueError, ImportError) as e:
        raise SystemExit(f"esam-eval: {e}") from None


def _run_everything(args, records) -> dict:
    ours = _generator(args, args.model, args.checkpoint)
    against = _generator(args, args.against, args.against_checkpoint) if args.against else None
    res = evaluate_everything(ours, records, args.max_dets, against, progress=not args.no_progress)
    res["generator"] = generator_kwargs(args)
    if args.against:
        res["against"] = args.against
    return res


if __name__ == "__main__":
    sys.exit(main())
