"""`esam-bench --amg`: seconds per image of the automatic mask generator ("segment everything"), ours and
the official `segment_anything` generator with identical weights and settings in the same run.

    esam-bench --amg --models sam_vit_b efficient_sam_vitt --points-per-side 16 32 --crop-n-layers 0 1 \\
               --reference --fast --json amg.json --markdown amg.md --plot amg.png

Each row is split into encoder (preprocessing + image encoder, per crop), decoder (prompt encoder + mask
decoder calls) and post-processing (everything else: upsampling, stability, NMS, RLE, records), with the
number of masks, masks per second and the peak memory of the `generate` calls. `--reference` adds the
official generator for SAM models and checks that its masks are ours; `--fast` adds our opt-in fast mode
(`fast=True`) and its agreement with our exact mode (mean IoU of one-to-one matched masks, share of
images whose mask count changes).

No pretrained weights: the models get `randomize_` weights, under which hardly any mask passes the
default thresholds, so the thresholds default to lower values (as in the parity tests): pred_iou_thresh
0.05, stability_score_thresh 0.6, stability offset 0.1, box_nms_thresh and crop_nms_thresh 1.0 (random
masks share their boxes, so NMS at 0.7 would leave one mask).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import efficient_sam as es
from efficient_sam.config import parse_override
from efficient_sam.evaluation.everything import agreement
from efficient_sam.images import read_rgb

from .official import ReferenceUnavailable, build_official, check_reference
from .random_weights import randomize_
from .report import font as report_font
from .report import write_outputs
from .timing import PeakMemory, machine_info, release_memory, rss_bytes, sync

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = [str(ROOT / "assets" / "photos" / "dogs.jpg")]
AMG_PHASES = ("encoder", "decoder", "post")


class PhaseTimer:
    """Accumulates the synchronised wall time of calls to wrapped methods, per phase."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, dict.fromkeys(AMG_PHASES[:2], 0.0)

    def wrap(self, obj: Any, attr: str, phase: str) -> None:
        fn: Callable = getattr(obj, attr)

        def timed(*a, **k):
            sync(self.device)
            t = time.perf_counter()
            out = fn(*a, **k)
            sync(self.device)
            self.seconds[phase] += time.perf_counter() - t
            return out

        setattr(obj, attr, timed)  # an instance attribute shadows the method / Module.forward

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)


def build_generators(name: str, impl: str, kw: dict, device: torch.device, seed: int, overrides: dict):
    """(generator, PhaseTimer) for `impl` "ours", "fast" or "official", on `randomize_` weights of `seed`."""
    ours = randomize_(es.build_model(name, **overrides), seed=seed).eval()
    timer = PhaseTimer(device)
    if impl == "official":
        from segment_anything import SamAutomaticMaskGenerator as Official

        ref = build_official(ours.config)
        ref.load_state_dict(ours.state_dict())
        ref.to(device)
        gen = Official(ref, **kw)
        timer.wrap(gen.predictor, "set_image", "encoder")
        timer.wrap(ref.prompt_encoder, "forward", "decoder")
        timer.wrap(ref.mask_decoder, "forward", "decoder")
        return gen, timer
    ours.to(device)
    gen = es.SamAutomaticMaskGenerator(ours, fast=(impl == "fast"), **kw)
    timer.wrap(gen.predictor, "set_images", "encoder")
    timer.wrap(ours, "decode", "decoder")
    return gen, timer


def run_row(name: str, impl: str, pps: int, crops: int, images: list[np.ndarray], args) -> dict[str, Any]:
    """One (model, impl, points_per_side, crop_n_layers) row; `records` holds the last run's output."""
    device = torch.device(args.device)
    kw = dict(points_per_side=pps, crop_n_layers=crops, points_per_batch=args.points_per_batch,
              pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh,
              stability_score_offset=args.stability_score_offset, box_nms_thresh=args.box_nms_thresh,
              crop_nms_thresh=args.crop_nms_thresh)
    release_memory(device)
    gen, timer = build_generators(name, impl, kw, device, args.seed, dict(args.overrides))
    for _ in range(args.warmup):
        gen.generate(images[0])
    totals, phases = [], []
    baseline = 0 if device.type == "cuda" else rss_bytes()
    with torch.inference_mode(), PeakMemory(device, baseline) as mem:
        for _ in range(args.repeats):
            timer.reset()
            t = time.perf_counter()
            records = [gen.generate(im) for im in images]
            sync(device)
            totals.append(time.perf_counter() - t)
            phases.append(dict(timer.seconds))
    n = len(images)
    total = statistics.median(totals) / n
    split = {p: statistics.median(s[p] for s in phases) / n for p in AMG_PHASES[:2]}
    split["post"] = max(total - split["encoder"] - split["decoder"], 0.0)
    masks = sum(len(r) for r in records) / n
    del gen, timer
    release_memory(device)
    return {"model": name, "impl": impl, "points_per_side": pps, "crop_n_layers": crops, "s_per_image": total,
            "all_s": [t / n for t in totals], "split_s": split, "masks_per_image": masks,
            "masks_per_s": masks / total if total else float("nan"), "peak_mem_mb": mem.mb, "records": records}


def compare(rows: list[dict]) -> None:
    """Adds, in place, `vs_official` (ours / official time, same masks) and `agreement` (fast vs exact)."""
    by = {(r["model"], r["impl"], r["points_per_side"], r["crop_n_layers"]): r for r in rows if "records" in r}
    for (model, impl, pps, crops), r in by.items():
        exact = by.get((model, "ours", pps, crops))
        if impl == "fast" and exact is not None:
            r["agreement"] = _summary(agreement(exact["records"], r["records"]))
            r["vs_exact"] = r["s_per_image"] / exact["s_per_image"]
        ref = by.get((model, "official", pps, crops))
        if impl in ("ours", "fast") and ref is not None:
            r["vs_official"] = r["s_per_image"] / ref["s_per_image"]
            if impl == "ours":
                same = _same(r["records"], ref["records"])
                r["same_masks_as_official"], r["tie_swaps"] = same["same"], same["tie_swaps"]


def _summary(a: dict) -> dict:
    return {k: a[k] for k in ("matched_miou", "recall", "precision", "count_changed", "n_images")}


def _same(ours: list[list[dict]], official: list[list[dict]], max_px: int = 20, tie: float = 1e-4) -> dict:
    """Same count of masks on every image, and each of ours equal (within `max_px` pixels: float noise at
    the threshold) to the official mask at its place or, where NMS ordered two masks whose predicted IoUs
    are within `tie` of each other (a float-noise tie), to one of those tied with it.
    -> {"same": bool, "tie_swaps": positions matched through a tie}."""
    swaps = 0
    for u, o in zip(ours, official):
        if len(u) != len(o):
            return {"same": False, "tie_swaps": swaps}
        scores = np.array([r["predicted_iou"] for r in o])
        for i, r in enumerate(u):
            if int((r["segmentation"] != o[i]["segmentation"]).sum()) <= max_px:
                continue
            tied = np.flatnonzero(np.abs(scores - r["predicted_iou"]) < tie)
            if abs(scores[i] - r["predicted_iou"]) >= tie or not any(int((r["segmentation"] != o[j]["segmentation"]).sum()) <= max_px for j in tied):
                return {"same": False, "tie_swaps": swaps}
            swaps += 1
    return {"same": True, "tie_swaps": swaps}


def markdown(report: dict) -> str:
    a, m = report["args"], report["machine"]
    lines = [
        f"Device `{m.get('gpu', m['cpu'])}` ({a['device']}), torch {m['torch']}, {m['torch_threads']} threads; "
        f"{len(a['images'])} image(s): {', '.join(Path(p).name for p in a['images'])}; points_per_batch "
        f"{a['points_per_batch']}, pred_iou_thresh {a['pred_iou_thresh']}, stability {a['stability_score_thresh']} "
        f"(offset {a['stability_score_offset']}), box / crop NMS {a['box_nms_thresh']} / {a['crop_nms_thresh']}; warm-up {a['warmup']}, "
        f"repeats {a['repeats']} (median). Seconds per image.",
        "",
        "| model | points/side | crop layers | impl | s / image | encoder | decoder | post | masks | masks/s "
        "| peak mem (MB) | / official | / exact | fast vs exact: matched mIoU, count changed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['points_per_side']} | {r['crop_n_layers']} | {r['impl']} | "
                         f"failed: {r['error']} |" + " |" * 9)
            continue
        s = r["split_s"]
        vs = f"{r['vs_official']:.2f}" if "vs_official" in r else ""
        if r.get("same_masks_as_official") is not None:
            swaps = f", {r['tie_swaps']} swapped at score ties" if r.get("tie_swaps") else ""
            vs += f" (same masks{swaps})" if r["same_masks_as_official"] else " (MASKS DIFFER)"
        ag = r.get("agreement")
        agt = f"{ag['matched_miou']:.4f}, {ag['count_changed']:.0%}" if ag else ""
        lines.append(
            f"| {r['model']} | {r['points_per_side']} | {r['crop_n_layers']} | {r['impl']} | {r['s_per_image']:.2f} "
            f"| {s['encoder']:.2f} | {s['decoder']:.2f} | {s['post']:.2f} | {r['masks_per_image']:.0f} "
            f"| {r['masks_per_s']:.1f} | {r['peak_mem_mb']:.0f} | {vs} | {r.get('vs_exact', float('nan')):.2f} | {agt} |"
            .replace("| nan |", "|  |")
        )
    lines += [""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str | Path) -> None:
    """Seconds per image as horizontal bars stacked encoder / decoder / post, one bar per row, with PIL."""
    from PIL import Image, ImageDraw

    rows = [r for r in report["results"] if "split_s" in r]
    W, L, R, T, bar = 1000, 330, 40, 60, 22
    H = T + len(rows) * (bar + 8) + 60
    im = Image.new("RGB", (W, H), "white")
    d, font = ImageDraw.Draw(im), report_font()
    a = report["args"]
    d.text((10, 12), f"Segment everything: seconds per image ({a['device']}, "
                     f"{report['machine']['torch_threads']} threads), split by phase", fill="black", font=font)
    colours = {"encoder": (76, 114, 176), "decoder": (221, 132, 82), "post": (85, 168, 104)}
    for k, (p, c) in enumerate(colours.items()):
        d.rectangle([L + 120 * k, 34, L + 120 * k + 12, 46], fill=c)
        d.text((L + 120 * k + 18, 33), p, fill="black", font=font)
    top = max(r["s_per_image"] for r in rows) if rows else 1.0
    scale = (W - L - R - 60) / top
    for i, r in enumerate(rows):
        y = T + i * (bar + 8)
        d.text((10, y + 4), f"{r['model']} {r['points_per_side']}x{r['points_per_side']} crops {r['crop_n_layers']} "
                            f"{r['impl']}", fill="black", font=font)
        x = L
        for p, c in colours.items():
            w = r["split_s"][p] * scale
            d.rectangle([x, y, x + w, y + bar], fill=c)
            x += w
        d.text((x + 6, y + 4), f"{r['s_per_image']:.2f} s", fill="black", font=font)
    im.save(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esam-bench --amg", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["sam_vit_b", "efficient_sam_vitt"])
    p.add_argument("--points-per-side", nargs="+", type=int, default=[16])
    p.add_argument("--crop-n-layers", nargs="+", type=int, default=[0])
    p.add_argument("--reference", action="store_true", help="also the official segment_anything generator (SAM models)")
    p.add_argument("--fast", action="store_true", help="also our fast mode, with its agreement to the exact mode")
    p.add_argument("--no-exact", dest="exact", action="store_false", help="skip our exact mode (GPU runs)")
    p.add_argument("--images", nargs="+", default=DEFAULT_IMAGES, help="photos (default: dogs.jpg)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--pred-iou-thresh", type=float, default=0.05)
    p.add_argument("--stability-score-thresh", type=float, default=0.6)
    p.add_argument("--stability-score-offset", type=float, default=0.1)
    p.add_argument("--box-nms-thresh", type=float, default=1.0)
    p.add_argument("--crop-nms-thresh", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=None, help="untimed generate calls (default: 0 on CPU, 1 on CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes over the images (default: 1 on CPU, 3 on CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                   metavar="KEY=VALUE", help="config override for every model, e.g. --set encoder_depth=2")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("--no-progress", action="store_true")
    return p


def plan(args) -> tuple[list[tuple[str, str, int, int]], list[str]]:
    """The rows to run and the notes on rows left out."""
    notes, runs = [], []
    for name in args.models:
        impls = (["ours"] if args.exact else []) + (["fast"] if args.fast else [])
        if args.reference:
            try:
                check_reference(es.get_config(name, **dict(args.overrides)))
                impls.append("official")
            except ReferenceUnavailable as e:
                notes.append(f"{name}: no official timing: {e} (and the official generator takes a segment_anything Sam)")
        runs += [(name, i, pps, c) for pps in args.points_per_side for c in args.crop_n_layers for i in impls]
    return runs, notes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm.auto import tqdm

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("esam-bench --amg: --device cuda but CUDA is not available")
    unknown = [m for m in args.models if m not in es.list_models()]
    if unknown:
        raise SystemExit(f"esam-bench --amg: unknown model(s) {unknown}; available: {', '.join(es.list_models())}")
    if min(args.points_per_side) < 1 or min(args.crop_n_layers) < 0 or args.points_per_batch < 1:
        raise SystemExit("esam-bench --amg: --points-per-side and --points-per-batch must be >= 1, --crop-n-layers >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = device.type == "cpu"
    args.warmup = args.warmup if args.warmup is not None else (0 if cpu else 1)
    args.repeats = args.repeats if args.repeats is not None else (1 if cpu else 3)
    if args.repeats < 1:
        raise SystemExit("esam-bench --amg: --repeats must be >= 1")
    images = []
    for p in args.images:
        if not Path(p).is_file():
            raise SystemExit(f"esam-bench --amg: image {p} does not exist")
        images.append(read_rgb(p))
    runs, notes = plan(args)
    if not runs:
        raise SystemExit("esam-bench --amg: nothing to run (--no-exact without --fast or --reference?)")
    notes += [
        "encoder = preprocessing + image encoder (per crop); decoder = prompt encoder + mask decoder calls; post = "
        "the rest of `generate` (upsampling, stability score, NMS, mask encoding, records)",
        "peak memory: CUDA max_memory_allocated (weights included); CPU: peak RSS during generate minus RSS before it",
        "weights are random (benchmarks.random_weights.randomize_, seeded), so the thresholds are lowered "
        "(module docstring); same masks = same count and order, each within 20 pixels (float noise at the threshold), "
        "except masks whose predicted IoUs tie within 1e-4, which NMS may order either way",
        "fast = SamAutomaticMaskGenerator(fast=True): bf16 autocast for encoder and decoder, stability score on the "
        "low-res logits, one upsampling of the kept masks",
    ]
    results = []
    bar = tqdm(runs, desc="esam-bench --amg", unit="run", disable=args.no_progress, file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for name, impl, pps, crops in bar:
            bar.set_postfix_str(f"{name} {impl} {pps}x{pps} crops {crops}", refresh=True)
            try:
                results.append(run_row(name, impl, pps, crops, images, args))
            except Exception as e:  # noqa: BLE001 - keep the other rows, report the failure
                results.append({"model": name, "impl": impl, "points_per_side": pps, "crop_n_layers": crops,
                                "error": f"{type(e).__name__}: {e}"})
                print(f"esam-bench --amg: {name} [{impl}] failed: {type(e).__name__}: {e}", file=sys.stderr)
    bar.close()
    compare(results)
    for r in results:
        r.pop("records", None)
    report = {
        "command": "esam-bench --amg " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "machine": machine_info(device), "args": vars(args), "results": results, "notes": notes,
    }
    md = markdown(report)
    print(md)
    write_outputs(report, md, args.json, args.markdown)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(report, args.plot)
    return 1 if any("error" in r for r in results) else 0
