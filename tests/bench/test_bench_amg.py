"""`esam-bench --amg`: our generator, its fast mode and the official generator on a tiny config, same
weights, same photo: the phase split adds up, our masks are the official ones, the fast mode agrees."""

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import amg_bench, bench
from helpers import PHOTOS

TINY = ["--set", "encoder_depth=2", "--set", "encoder_global_attn_indexes=(1,)", "--set", "encoder_embed_dim=64",
        "--set", "encoder_num_heads=2", "--set", "encoder_img_size=256"]


def test_esam_bench_amg(tmp_path):
    out = tmp_path / "amg"
    argv = ["--amg", "--models", "sam_vit_b", "efficient_sam_vitt", "--points-per-side", "6",
            "--crop-n-layers", "0", "1", "--reference", "--fast", "--device", "cpu", "--seed", "2",
            "--images", str(PHOTOS / "dogs.jpg"), *TINY,
            "--json", str(out / "a.json"), "--markdown", str(out / "a.md"), "--plot", str(out / "a.png"), "--no-progress"]
    assert bench.main(argv) == 0
    report = json.loads((out / "a.json").read_text())
    rows = {(r["model"], r["impl"], r["crop_n_layers"]): r for r in report["results"]}
    assert set(rows) == {(m, i, c) for m in ("sam_vit_b", "efficient_sam_vitt") for i in ("ours", "fast", "official")
                         for c in (0, 1) if not (m == "efficient_sam_vitt" and i == "official")}
    for r in rows.values():
        assert "error" not in r, r.get("error")
        s = r["split_s"]
        assert s["encoder"] > 0 and s["decoder"] > 0 and s["post"] >= 0
        assert s["encoder"] + s["decoder"] <= r["s_per_image"] + 1e-6
        assert r["masks_per_image"] >= 1 and r["masks_per_s"] > 0 and r["peak_mem_mb"] >= 0
    for c in (0, 1):
        ours, official = rows[("sam_vit_b", "ours", c)], rows[("sam_vit_b", "official", c)]
        assert ours["same_masks_as_official"] is True
        assert ours["masks_per_image"] == official["masks_per_image"] >= 10
        assert ours["vs_official"] == pytest.approx(ours["s_per_image"] / official["s_per_image"])
        for m in ("sam_vit_b", "efficient_sam_vitt"):
            ag = rows[(m, "fast", c)]["agreement"]
            assert ag["n_images"] == 1 and ag["matched_miou"] > 0.9 and ag["recall"] > 0.8, (m, c, ag)
    assert "efficient_sam_vitt: no official timing" in " ".join(report["notes"])
    md = (out / "a.md").read_text()
    assert md.startswith("`esam-bench --amg --models sam_vit_b") and "(same masks)" in md
    png = np.asarray(Image.open(out / "a.png").convert("RGB"))
    assert png.shape[0] > 100 and (png != 255).any(axis=2).mean() > 0.02  # bars were drawn


def test_esam_bench_amg_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="unknown model"):
        amg_bench.main(["--models", "sam_vit_q"])
    with pytest.raises(SystemExit, match="does not exist"):
        amg_bench.main(["--models", "sam_vit_b", "--images", str(tmp_path / "none.jpg")])
    with pytest.raises(SystemExit, match="nothing to run"):
        amg_bench.main(["--models", "sam_vit_b", "--no-exact"])
    with pytest.raises(SystemExit, match=">= 1"):
        amg_bench.main(["--models", "sam_vit_b", "--points-per-side", "0"])


def test_same_masks_allows_only_swaps_at_score_ties():
    """The benchmark's "same masks" check: masks equal at their places, or swapped between two records
    whose predicted IoUs tie within 1e-4 (NMS may order a float-noise tie either way)."""
    m = np.zeros((3, 8, 8), bool)
    m[0, :4], m[1, 4:], m[2, :, :2] = True, True, True
    rec = lambda i, s: {"segmentation": m[i], "predicted_iou": s}  # noqa: E731
    official = [[rec(0, 0.5), rec(1, 0.5 + 2e-7), rec(2, 0.1)]]
    assert amg_bench._same(official, official) == {"same": True, "tie_swaps": 0}
    swapped = [[rec(1, 0.5 + 2e-7), rec(0, 0.5), rec(2, 0.1)]]
    assert amg_bench._same(swapped, official) == {"same": True, "tie_swaps": 2}
    far = [[rec(2, 0.1), rec(1, 0.5 + 2e-7), rec(0, 0.5)]]  # swapped across different scores
    assert amg_bench._same(far, official)["same"] is False
    assert amg_bench._same([official[0][:2]], official)["same"] is False
