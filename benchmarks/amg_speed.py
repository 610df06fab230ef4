"""Seconds per image of our `SamAutomaticMaskGenerator` and the official one, identical random weights and
settings, same run; checks that the masks are the same.

    python benchmarks/amg_speed.py [--model vit_b] [--points-per-side 16] [--crop-n-layers 0] [--threads 2]

Random weights leave no masks at the default thresholds, so the thresholds are lowered (as in
tests/test_amg.py): pred_iou_thresh 0.05, stability offset 0.1, stability_score_thresh 0.6.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    p.add_argument("--image", default=str(ROOT / "assets" / "photos" / "dogs.jpg"))
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--crop-n-layers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from segment_anything import SamAutomaticMaskGenerator as Official
    from segment_anything import sam_model_registry

    import efficient_sam as es
    from helpers import load_rgb, randomize_

    official = randomize_(sam_model_registry[a.model](), seed=0).eval().to(a.device)
    ours = es.build_model(f"sam_{a.model}").eval()
    ours.load_state_dict(official.state_dict())
    ours.to(a.device)
    image = load_rgb(a.image)
    kw = dict(
        points_per_side=a.points_per_side, crop_n_layers=a.crop_n_layers, pred_iou_thresh=0.05,
        stability_score_thresh=0.6, stability_score_offset=0.1,
    )
    out = {}
    for name, gen in (("official", Official(official, **kw)), ("ours", es.SamAutomaticMaskGenerator(ours, **kw))):
        t = time.perf_counter()
        out[name] = gen.generate(image)
        out[name + "_s"] = time.perf_counter() - t
    same = len(out["ours"]) == len(out["official"]) and all(
        int((u["segmentation"] != o["segmentation"]).sum()) <= 10 for u, o in zip(out["ours"], out["official"])
    )
    print(
        f"SAM {a.model}, {image.shape[1]}x{image.shape[0]}, points_per_side {a.points_per_side}, crop_n_layers "
        f"{a.crop_n_layers}, {a.threads} threads, {a.device}: official {out['official_s']:.1f} s, ours "
        f"{out['ours_s']:.1f} s (ratio {out['ours_s'] / out['official_s']:.2f}), {len(out['ours'])} masks, "
        f"same masks: {same}"
    )


if __name__ == "__main__":
    main()
