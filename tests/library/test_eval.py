"""`esam-eval` on the real GrabCut data: oracle models with known outputs, the ignore band, metrics
against an independent numpy computation, point sampling, mask selection, the three data layouts,
the COCO RLE / polygon code against pycocotools, and the real predictor wrapper."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import efficient_sam as es
from benchmarks import evaluate as cli
from efficient_sam import datasets as ds
from efficient_sam import evaluation as ev
from efficient_sam.evaluation.metrics import boundary_iou, mask_iou, mask_to_boundary
from helpers import GRABCUT


@pytest.fixture(scope="module")
def records(asset_paths):
    return ds.read_mask_folder(asset_paths.grabcut)


# ------------------------------------------------------------------------------------------------
# An independent implementation of the metrics: the Cheng et al. / HQ-SAM gist, literally
# (pad by 1 with zeros, `d` iterations of a 3x3 erosion whose outer border never erodes, crop).
# ------------------------------------------------------------------------------------------------


def np_erode_3x3(x: np.ndarray) -> np.ndarray:
    p = np.pad(x, 1, constant_values=True)  # cv2.erode's default border: does not erode
    out = np.ones_like(x)
    for dy in range(3):
        for dx in range(3):
            out &= p[dy : dy + x.shape[0], dx : dx + x.shape[1]]
    return out


def np_boundary(mask: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    h, w = mask.shape
    d = max(1, int(round(ratio * np.sqrt(h * h + w * w))))
    x = np.pad(mask, 1, constant_values=False)
    for _ in range(d):
        x = np_erode_3x3(x)
    return mask & ~x[1 : h + 1, 1 : w + 1]


def np_iou(p: np.ndarray, g: np.ndarray, ignore: np.ndarray | None) -> float:
    valid = np.ones_like(g) if ignore is None else ~ignore
    union = ((p | g) & valid).sum()
    return float(((p & g) & valid).sum() / union) if union else float("nan")


# ------------------------------------------------------------------------------------------------
# Oracle models
# ------------------------------------------------------------------------------------------------


def test_ground_truth_oracle_scores_one(records):
    for prompt, sub in (("box", records), ("point", records[::3]), ("points3", records[1::3])):
        res = ev.evaluate(ev.GroundTruthOracle(), sub, prompt)
        assert res["n"] == len(sub) and res["miou"] == 1.0 and res["mbiou"] == 1.0


def test_box_oracle_gives_the_published_baseline(records, asset_paths):
    """assets/README.md: the tight box filled as the mask, ignore band excluded: 0.546 / 0.116."""
    res = ev.evaluate(ev.BoxOracle(), records, "box")
    assert res["n"] == 50
    assert round(res["miou"], 3) == 0.546 and round(res["mbiou"], 3) == 0.116
    # Every item against the independent numpy computation and the boxes of pairs.csv.
    import csv

    rows = {r["name"]: r for r in csv.DictReader(open(asset_paths.grabcut / "pairs.csv"))}
    for i, item in enumerate(res["per_item"]):
        row = rows[item["object_id"]]
        x0, y0, x1, y1 = map(int, row["bbox_xyxy"].split())
        assert item["box"] == [x0, y0, x1, y1]
        g = np.asarray(Image.open(asset_paths.grabcut / row["mask"])) > 128
        ign = np.asarray(Image.open(asset_paths.grabcut / row["ignore"])) > 128 if row["ignore"] else None
        p = np.zeros_like(g)
        p[y0:y1, x0:x1] = True
        assert item["iou"] == pytest.approx(np_iou(p, g, ign), abs=1e-12)
        if i % 5 == 0:  # the boundary by iterated erosion is slow in numpy: check a subset
            assert item["biou"] == pytest.approx(np_iou(np_boundary(p), np_boundary(g), ign), abs=1e-12)


def test_metrics_match_independent_numpy(records):
    rng = np.random.default_rng(0)
    for rec in records[::6]:
        obj = rec.objects[0]
        g, ign = obj.mask(), obj.ignore()
        h, w = g.shape
        # predictions: shifted ground truth, eroded/dilated blobs, a random box, an empty mask
        dy, dx = rng.integers(-12, 13, 2)
        shifted = np.roll(g, (dy, dx), axis=(0, 1))
        box = np.zeros_like(g)
        box[rng.integers(0, h // 2) :, : rng.integers(w // 2, w)] = True
        for p in (shifted, box, np_erode_3x3(np_erode_3x3(g)), np.zeros_like(g), np.ones_like(g)):
            assert (mask_to_boundary(p) == np_boundary(p)).all()
            for ig in (ign, None):
                assert mask_iou(p, g, ig) == pytest.approx(np_iou(p, g, ig), abs=1e-12)
                assert boundary_iou(p, g, ig) == pytest.approx(
                    np_iou(np_boundary(p), np_boundary(g), ig), abs=1e-12
                )
    # Edge cases: masks touching the image border erode from the border; tiny masks are all boundary.
    m = np.zeros((50, 80), bool)
    m[:10, :] = True
    assert (mask_to_boundary(m) == np_boundary(m)).all()
    assert mask_to_boundary(m).sum() == 800 - 6 * 76  # d = 2: rows 0-1 and 8-9, columns 0-1 and 78-79
    m[3:] = False
    assert (mask_to_boundary(m) == m).all()
    assert np.isnan(mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)))


class IgnoreFlipOracle:
    """Ground truth with every ignore-band pixel flipped: wrong only where nothing is scored."""

    family = "oracle"
    uses_targets = True

    def __init__(self, bands):
        self.bands = iter(bands)

    def predict_batch(self, image, boxes=None, points=None, labels=None, multimask_output=True, targets=None):
        band = next(self.bands)
        pred = targets ^ band[None] if band is not None else targets
        return pred, np.ones(len(targets))


def test_ignore_band_is_honoured(records):
    bands = [rec.objects[0].ignore() for rec in records]
    assert sum(b is not None for b in bands) == 42
    res = ev.evaluate(IgnoreFlipOracle(bands), records, "box")
    assert res["miou"] == 1.0 and all(it["iou"] == 1.0 for it in res["per_item"])
    # Boundary IoU: boundaries are taken on the full masks, then band pixels are dropped; flipping the
    # band moves the prediction's boundary beyond the band too (d = 2% of the diagonal > band width),
    # so it is not 1 - but it must equal the independent computation.
    for i in [i for i, b in enumerate(bands) if b is not None][:3]:
        g, b = records[i].objects[0].mask(), bands[i]
        want = np_iou(np_boundary(g ^ b), np_boundary(g), b)
        assert res["per_item"][i]["biou"] == pytest.approx(want, abs=1e-12) and want < 1
    with_band = res["mbiou"]
    # The same predictions scored without the ignore masks are wrong exactly on the 42 banded images.
    no_ignore = [
        ds.ImageRecord(r.image_id, r.path, r.load_image,
                       [ds.ObjectRecord(o.object_id, o.load_mask, None, o.meta) for o in r.objects])
        for r in records
    ]
    res = ev.evaluate(IgnoreFlipOracle(bands), no_ignore, "box")
    ious = [it["iou"] for it in res["per_item"]]
    assert sum(i < 1.0 for i in ious) == 42 and all(i == 1.0 for i, b in zip(ious, bands) if b is None)
    assert res["mbiou"] < with_band
    # And the box baseline depends on it (0.546 with the band excluded, lower counted as background).
    assert round(ev.evaluate(ev.BoxOracle(), no_ignore, "box")["miou"], 3) == 0.535


# ------------------------------------------------------------------------------------------------
# Prompts and mask selection
# ------------------------------------------------------------------------------------------------


class RecordingModel:
    """Returns the ground truth and records what the evaluation loop asked."""

    uses_targets = True

    def __init__(self, family):
        self.family = family
        self.calls = []

    def predict_batch(self, image, boxes=None, points=None, labels=None, multimask_output=True, targets=None):
        self.calls.append(dict(boxes=boxes, points=points, labels=labels, multimask=multimask_output))
        return targets, np.ones(len(targets))


def test_points_uniform_inside_mask_and_seeded(records):
    sub = records[:12]
    runs = {}
    for seed in (0, 0, 1):
        m = RecordingModel("sam")
        ev.evaluate(m, sub, "points3", seed=seed)
        runs.setdefault(seed, []).append(m.calls)
    a, b = runs[0]
    for ca, cb, rec in zip(a, b, sub):
        np.testing.assert_array_equal(ca["points"], cb["points"])  # deterministic
        pts, labels = ca["points"], ca["labels"]
        assert pts.shape == (1, 3, 2) and (labels == 1).all() and ca["boxes"] is None
        g, ign = rec.objects[0].mask(), rec.objects[0].ignore()
        xs, ys = pts[0, :, 0].astype(int), pts[0, :, 1].astype(int)
        assert (pts[0] == np.stack([xs, ys], 1)).all()  # pixel positions
        assert g[ys, xs].all()  # inside the mask ...
        assert ign is None or not ign[ys, xs].any()  # ... and outside the unknown band
        assert len({(x, y) for x, y in zip(xs, ys)}) == 3  # without replacement
    assert any((ca["points"] != cc["points"]).any() for ca, cc in zip(a, runs[1][0]))
    # The first of the 3 points is not the single point: independent draws, but both reproducible.
    m1 = RecordingModel("sam")
    ev.evaluate(m1, sub, "point", seed=0)
    assert all(c["points"].shape == (1, 1, 2) for c in m1.calls)
    # Uniformity: over many draws, points cover the mask evenly (mean near the mask centroid).
    g, ign = sub[0].objects[0].mask(), sub[0].objects[0].ignore()
    region = g & ~ign if ign is not None else g
    pts = np.concatenate([ev.sample_points(g, ign, 3, np.random.default_rng(s)) for s in range(2000)])
    ys, xs = np.nonzero(region)
    # 6000 draws: the standard error of the mean is 0.013 std
    assert abs(pts[:, 0].mean() - xs.mean()) < 0.05 * xs.std() and abs(pts[:, 1].mean() - ys.mean()) < 0.05 * ys.std()
    assert abs(pts[:, 0].std() - xs.std()) < 0.05 * xs.std() and abs(pts[:, 1].std() - ys.std()) < 0.05 * ys.std()


def test_scored_mask_selection_rule(records):
    expect = {
        ("sam", "box"): False, ("sam", "points3"): False, ("sam", "point"): True,
        ("efficient_sam", "box"): True, ("efficient_sam", "points3"): True, ("efficient_sam", "point"): True,
    }
    for (family, prompt), multimask in expect.items():
        assert ev.use_multimask(family, prompt) is multimask
        m = RecordingModel(family)
        res = ev.evaluate(m, records[:2], prompt)
        assert all(c["multimask"] is multimask for c in m.calls)
        assert res["scored_mask"] == ("most confident of 3" if multimask else "single-mask output")


# ------------------------------------------------------------------------------------------------
# The real model wrapper: batched prompts == the predictor one prompt at a time
# ------------------------------------------------------------------------------------------------

TINY = dict(encoder_img_size=256, encoder_depth=1, encoder_embed_dim=64, encoder_num_heads=2,
            encoder_global_attn_indexes=(0,))


@pytest.mark.parametrize("name", ["sam_vit_b", "efficient_sam_vitt"])
def test_predictor_model_batched_equals_single_prompts(name, records):
    torch.manual_seed(0)
    model = es.build_model(name, **TINY)
    wrapped = ev.PredictorModel(model)
    rec = records[3]
    image, g = rec.image(), rec.objects[0].mask()
    x0, y0, x1, y1 = ds.mask_to_box(g)
    boxes = np.array([[x0, y0, x1, y1], [x0 + 5, y0, x1, y1 - 9], [0, 0, image.shape[1], image.shape[0]]], np.float32)
    points = ev.sample_points(g, None, 3, np.random.default_rng(0))[None].repeat(2, 0)
    points[1, :, 0] = np.clip(points[1, :, 0] + 4, 0, image.shape[1] - 1)
    labels = np.ones(points.shape[:2], np.int64)
    pred = es.SamPredictor(model)
    pred.set_image(image)
    for kw in (dict(boxes=boxes), dict(points=points, labels=labels)):
        for multimask in (False, True):
            masks, scores = wrapped.predict_batch(image, multimask_output=multimask, **kw)
            k = len(kw.get("boxes", kw.get("points")))
            assert masks.shape == (k,) + image.shape[:2] and masks.dtype == bool and scores.shape == (k,)
            for i in range(k):
                single = dict(box=boxes[i]) if "boxes" in kw else dict(point_coords=points[i], point_labels=labels[i])
                m, s, _ = pred.predict(multimask_output=multimask, **single)
                best = int(np.argmax(s))
                assert scores[i] == pytest.approx(float(s[best]), abs=1e-4)
                assert (masks[i] == m[best]).mean() > 0.999


def test_cli_on_grabcut(tmp_path, asset_paths):
    out = tmp_path / "box.json"
    assert cli.main(["--model", "oracle:box", "--data", str(asset_paths.grabcut), "--prompt", "box", "--json", str(out),
                    "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert {"miou", "mbiou", "n", "per_item"} <= set(res)
    assert res["n"] == 50 and len(res["per_item"]) == 50 and res["layout"] == "masks"
    assert round(res["miou"], 3) == 0.546 and round(res["mbiou"], 3) == 0.116
    assert {"image_id", "object_id", "iou", "biou", "score", "box"} <= set(res["per_item"][0])
    # A real (random, tiny) model through the whole CLI, batched prompts, both families.
    for name, prompt in (("sam_vit_b", "points3"), ("efficient_sam_vitt", "point")):
        out = tmp_path / f"{name}.json"
        args = ["--model", name, "--data", str(asset_paths.grabcut), "--prompt", prompt, "--limit", "3", "--json", str(out),
                "--no-progress"]
        for k, v in TINY.items():
            args += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
        with pytest.warns(UserWarning, match="random weights"):
            assert cli.main(args) == 0
        res = json.loads(out.read_text())
        assert res["n"] == 3 and 0 <= res["miou"] <= 1 and 0 <= res["mbiou"] <= 1
        assert all(len(it["points"]) == (3 if prompt == "points3" else 1) for it in res["per_item"])


def test_cli_rejects_hq_and_bad_data(tmp_path, asset_paths):
    with pytest.raises(SystemExit, match="--hq needs an HQ model"):
        cli.main(["--model", "sam_vit_b", "--set", "encoder_depth=1", "--set", "encoder_global_attn_indexes=(0,)",
                 "--data", str(asset_paths.grabcut), "--limit", "1", "--hq", "--no-progress"])
    with pytest.raises(SystemExit, match="layout"):
        cli.main(["--model", "oracle:gt", "--data", str(tmp_path)])
    with pytest.raises(ValueError, match="box prompts"):
        ev.evaluate(ev.BoxOracle(), ds.read_mask_folder(asset_paths.grabcut)[:1], "point")


# ------------------------------------------------------------------------------------------------
# COCO and SA-1B layouts (built from GrabCut) and the RLE / polygon code
# ------------------------------------------------------------------------------------------------


def _encode(mask):
    from pycocotools import mask as mu

    rle = mu.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
def test_coco_and_sa1b_layouts_give_the_same_results(records, tmp_path):
    sub = records[:6]
    # COCO: annotations/instances_val.json + val/ images; one uncompressed RLE among compressed ones.
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "val").mkdir()
    images, anns = [], []
    for i, rec in enumerate(sub):
        g = rec.objects[0].mask()
        shutil.copy(rec.path, tmp_path / "coco" / "val" / f"{rec.image_id}.png")
        images.append({"id": i + 1, "file_name": f"{rec.image_id}.png", "height": g.shape[0], "width": g.shape[1]})
        seg = _encode(g)
        if i == 0:
            from pycocotools import mask as mu

            seg = {"size": list(g.shape), "counts": ds._mask_counts(g)}
            assert (mu.decode(mu.frPyObjects(seg, *g.shape)) == g).all()
        anns.append({"id": 100 + i, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "segmentation": seg,
                     "area": int(g.sum()), "bbox": list(ds.mask_to_box(g))})
    crowd = np.ones((images[0]["height"], images[0]["width"]), bool)
    anns.append({"id": 999, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": _encode(crowd),
                 "area": 1, "bbox": [0, 0, 1, 1]})  # crowd: skipped
    (tmp_path / "coco" / "annotations" / "instances_val.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]})
    )
    # SA-1B: a folder with sa_<id>.jpg|json pairs, and the same pairs in a .tar shard.
    (tmp_path / "sa1b").mkdir()
    for i, rec in enumerate(sub):
        g = rec.objects[0].mask()
        shutil.copy(rec.path, tmp_path / "sa1b" / f"sa_{i}.png")
        (tmp_path / "sa1b" / f"sa_{i}.json").write_text(json.dumps({
            "image": {"image_id": i, "height": g.shape[0], "width": g.shape[1], "file_name": f"sa_{i}.png"},
            "annotations": [{"id": 7, "segmentation": _encode(g), "area": int(g.sum()),
                             "bbox": list(ds.mask_to_box(g)), "predicted_iou": 0.9}],
        }))
    with tarfile.open(tmp_path / "sa_000000.tar", "w") as tf:
        for p in sorted((tmp_path / "sa1b").iterdir()):
            tf.add(p, arcname=p.name)

    base = [
        ds.ImageRecord(r.image_id, r.path, r.load_image,
                       [ds.ObjectRecord(o.object_id, o.load_mask, None, o.meta) for o in r.objects])
        for r in sub
    ]
    ref = ev.evaluate(ev.BoxOracle(), base, "box")
    for path, layout in ((tmp_path / "coco", "coco"), (tmp_path / "coco" / "annotations" / "instances_val.json", "coco"),
                         (tmp_path / "sa1b", "sa1b"), (tmp_path / "sa_000000.tar", "sa1b")):
        assert ds.detect_layout(path) == layout
        recs = ds.open_dataset(path)
        assert len(recs) == 6 and all(len(r.objects) == 1 for r in recs)
        for r, b in zip(recs, sub):
            np.testing.assert_array_equal(r.image(), b.image())
            np.testing.assert_array_equal(r.objects[0].mask(), b.objects[0].mask())
        res = ev.evaluate(ev.BoxOracle(), recs, "box")
        assert [it["iou"] for it in res["per_item"]] == [it["iou"] for it in ref["per_item"]]
        assert ev.evaluate(ev.GroundTruthOracle(), recs, "points3")["miou"] == 1.0
    assert len(ds.read_coco(tmp_path / "coco", include_crowd=True)[0].objects) == 2
    out = tmp_path / "sa.json"
    assert cli.main(["--model", "oracle:gt", "--data", str(tmp_path / "sa_000000.tar"), "--prompt", "point",
                    "--json", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["layout"] == "sa1b"


def test_mask_folder_without_pairs_csv(tmp_path, asset_paths):
    for sub in ("images", "masks", "ignore"):
        (tmp_path / sub).mkdir()
    shutil.copy(asset_paths.grabcut / "images" / "grabcut_124080.jpg", tmp_path / "images" / "a.jpg")
    m = np.asarray(Image.open(asset_paths.grabcut / "masks" / "grabcut_124080.png"))
    Image.fromarray(m).save(tmp_path / "masks" / "a.png")
    Image.fromarray(255 - m).save(tmp_path / "masks" / "a_1.png")  # a second object of the same image
    shutil.copy(asset_paths.grabcut / "ignore" / "grabcut_124080.png", tmp_path / "ignore" / "a.png")
    recs = ds.read_mask_folder(tmp_path)
    assert len(recs) == 1 and [o.object_id for o in recs[0].objects] == ["a", "a_1"]
    assert recs[0].objects[0].ignore() is not None and recs[0].objects[1].ignore() is None
    calls = RecordingModel("sam")
    ev.evaluate(calls, recs, "box")
    assert len(calls.calls) == 1 and calls.calls[0]["boxes"].shape == (2, 4)  # one batched call per image


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
def test_rle_and_polygons_match_pycocotools(records):
    from pycocotools import mask as mu

    for rec in records[::5]:
        g = rec.objects[0].mask()
        ref = mu.encode(np.asfortranarray(g.astype(np.uint8)))
        assert ds.rle_encode(g)["counts"] == ref["counts"].decode()
        np.testing.assert_array_equal(ds.rle_decode(ref), g)
        np.testing.assert_array_equal(ds.rle_decode({"size": ref["size"], "counts": ds._mask_counts(g)}), g)
    rng = np.random.default_rng(0)
    for trial in range(300):
        h, w = (int(v) for v in rng.integers(5, 90, 2))
        k = int(rng.integers(3, 10))
        if trial % 2:
            pts = rng.uniform(-3, max(h, w) + 3, (k, 2))
        else:
            pts = rng.integers(0, max(h, w), (k, 2)).astype(float)
        if trial % 5 == 0:
            pts = np.concatenate([pts, pts[-1:]])  # a repeated vertex
        polys = [pts.ravel().tolist()] + ([(pts[::-1] * 0.5).ravel().tolist()] if trial % 3 == 0 else [])
        ref = mu.decode(mu.merge(mu.frPyObjects(polys, h, w))).astype(bool)
        np.testing.assert_array_equal(ds.polygons_to_mask(polys, h, w), ref)
        np.testing.assert_array_equal(ds.segmentation_to_mask(polys, h, w), ref)


@pytest.mark.parametrize("name", ["sam_vit_b", "efficient_sam_vitt"])
def test_low_precision_models_decode(name, records):
    """bf16 / fp16 models run end to end (the prompt PE stays fp32, its tokens are cast)."""
    torch.manual_seed(0)
    model = es.build_model(name, **TINY)
    rec = records[7]
    image, g = rec.image(), rec.objects[0].mask()
    boxes = np.array([ds.mask_to_box(g)], np.float32)
    ref = es.SamPredictor(model)
    ref.set_image(image)
    _, _, low32 = ref.predict(box=boxes[0], multimask_output=True)
    for dtype in (torch.bfloat16, torch.float16):
        m = es.build_model(name, **TINY)
        m.load_state_dict(model.state_dict())
        m.to(dtype)
        p = es.SamPredictor(m)
        p.set_image(image)
        _, iou, low = p.predict(box=boxes[0], multimask_output=True)
        assert np.isfinite(low).all() and np.isfinite(iou).all()
        assert np.abs(low - low32).max() / np.abs(low32).max() < 0.05
        masks, scores = ev.PredictorModel(m).predict_batch(image, boxes=boxes, multimask_output=True)
        assert masks.shape == (1,) + image.shape[:2] and np.isfinite(scores).all()


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the parameter or file, or a counted skip - never a silent answer
# (issue 13). Malformed folders are built in tmp_path from the real GrabCut files.
# ------------------------------------------------------------------------------------------------

STEMS = ("grabcut_106024", "grabcut_124080")  # the first without an ignore band, the second with one


def _run(capsys, argv) -> tuple[object, str]:
    """esam-eval's exit (0, or the SystemExit's code / message) and everything it said on stderr."""
    try:
        code = cli.main(argv + ["--no-progress"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    return code, f"{code if isinstance(code, str) else ''}\n{err}"


def _mask_folder(root, grabcut, pairs=True):
    """A copy of two GrabCut objects: images/, masks/, ignore/ and (optionally) their pairs.csv rows."""
    for sub in ("images", "masks", "ignore"):
        (root / sub).mkdir(parents=True)
    lines = (grabcut / "pairs.csv").read_text().splitlines()
    rows = [lines[0]] + [ln for ln in lines[1:] if ln.split(",")[0] in STEMS]
    for stem in STEMS:
        shutil.copy(grabcut / "images" / f"{stem}.jpg", root / "images")
        shutil.copy(grabcut / "masks" / f"{stem}.png", root / "masks")
        if (grabcut / "ignore" / f"{stem}.png").exists():
            shutil.copy(grabcut / "ignore" / f"{stem}.png", root / "ignore")
    if pairs:
        (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root


def _edit_pairs(root, fn):
    p = root / "pairs.csv"
    p.write_text(fn(p.read_text()))


def _gt(grabcut, stem):
    return np.asarray(Image.open(grabcut / "masks" / f"{stem}.png")) > 128


def _coco(root, grabcut, **changes):
    """A one-image COCO folder built from GrabCut; `changes` edit the JSON (annotation / image fields)."""
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    stem = STEMS[0]
    shutil.copy(grabcut / "images" / f"{stem}.jpg", root / "val")
    g = _gt(grabcut, stem)
    ann = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": int(g.sum()),
           "segmentation": ds.rle_encode(g)}
    img = {"id": 1, "file_name": f"{stem}.jpg", "height": g.shape[0], "width": g.shape[1]}
    ann.update(changes.get("ann", {}))
    for k in changes.get("drop_ann", ()):
        del ann[k]
    (root / "annotations" / "instances_val.json").write_text(
        changes.get("text") or json.dumps({"images": [img], "annotations": [ann]}))
    return root


def _broken_mask_value(root, grabcut):
    """A 0/255 mask divided by 4: values 0..63, none above 128."""
    m = root / "masks" / f"{STEMS[0]}.png"
    Image.fromarray((np.asarray(Image.open(m)) // 4).astype(np.uint8)).save(m)


def _resize(path, size=(100, 80)):
    Image.open(path).resize(size, Image.NEAREST).save(path)


# (case id, folder builder (tmp root, grabcut) -> data path, expected exit: 0 or "error",
#  a regex that the message or stderr must match)
BAD_FILES = [
    ("empty-folders", lambda r, g: (r / "images").mkdir(parents=True) or (r / "masks").mkdir() or r,
     "error", r"masks holds no mask files .*no pairs\.csv: no objects to read"),
    ("header-only-pairs-csv", lambda r, g: _edit_pairs(_mask_folder(r, g), lambda t: t.splitlines()[0] + "\n") or r,
     "error", r"pairs\.csv has a header but no rows"),
    ("empty-pairs-csv", lambda r, g: _edit_pairs(_mask_folder(r, g), lambda t: "") or r,
     "error", r"pairs\.csv is empty: it needs a header line"),
    ("all-masks-empty", lambda r, g: [Image.fromarray(np.zeros((321, 481), np.uint8)).save(p)
                                      for p in (_mask_folder(r, g) / "masks").iterdir()] and r,
     "error", r"nothing scored in .*: all 2 objects of the 2 images were skipped \(empty mask: 2\), so mIoU is undefined"),
    ("one-mask-empty", lambda r, g: Image.fromarray(np.zeros((321, 481), np.uint8)).save(
        _mask_folder(r, g) / "masks" / f"{STEMS[0]}.png") or r,
     0, r"esam-eval: skipped 1 of 2 objects \(empty mask: 1\)"),
    ("object-id-selects-no-pixels", lambda r, g: _edit_pairs(_mask_folder(r, g),
                                                             lambda t: t.replace(",255,", ",7,", 1)) or r,
     0, r"object_id 7 selects no pixels \(the file holds 0, 255\)[\s\S]*esam-eval: skipped 1 of 2 objects \(object_id selects no pixels: 1\)"),
    ("object-id-not-an-integer", lambda r, g: _edit_pairs(_mask_folder(r, g), lambda t: t.replace(",255,", ",abc,", 1)) or r,
     "error", r"pairs\.csv, row 1 \(line 2\), column 'object_id': 'abc' is not an integer"),
    ("object-id-negative", lambda r, g: _edit_pairs(_mask_folder(r, g), lambda t: t.replace(",255,", ",-1,", 1)) or r,
     "error", r"pairs\.csv, row 1 \(line 2\), column 'object_id': -1 is negative"),
    ("pairs-csv-without-mask-column", lambda r, g: _edit_pairs(_mask_folder(r, g),
                                                               lambda t: t.replace(",mask,", ",maskfile,", 1)) or r,
     "error", r"pairs\.csv: no 'mask' column \(the header has name, image, maskfile"),
    ("pairs-csv-empty-cell", lambda r, g: _edit_pairs(_mask_folder(r, g),
                                                      lambda t: t.replace(f"masks/{STEMS[1]}.png", "", 1)) or r,
     "error", r"pairs\.csv, row 2 \(line 3\), column 'mask': empty"),
    ("pairs-csv-missing-file", lambda r, g: (_mask_folder(r, g) / "masks" / f"{STEMS[1]}.png").unlink() or r,
     "error", rf"pairs\.csv, row 2 \(line 3\), column 'mask': .*masks/{STEMS[1]}\.png does not exist"),
    ("mask-matches-no-image", lambda r, g: ((_mask_folder(r, g, pairs=False) / "masks" / f"{STEMS[0]}.png").rename(
        r / "masks" / "other.png"), r)[-1],
     "error", r"mask .*other\.png matches no image in .*images"),
    ("ignore-of-another-size", lambda r, g: _resize(_mask_folder(r, g) / "ignore" / f"{STEMS[1]}.png") or r,
     "error", rf"ignore/{STEMS[1]}\.png: ignore mask is 80x100 \(HxW\), its image .*{STEMS[1]}\.jpg 321x481"),
    ("mask-of-another-size", lambda r, g: _resize(_mask_folder(r, g) / "masks" / f"{STEMS[0]}.png") or r,
     "error", rf"masks/{STEMS[0]}\.png: mask is 80x100 \(HxW\), its image .*{STEMS[0]}\.jpg 321x481"),
    ("corrupt-mask-file", lambda r, g: ((_mask_folder(r, g) / "masks" / f"{STEMS[0]}.png").write_bytes(b"\x89PNG junk"),
                                        r)[-1], "error", rf"cannot read mask file .*masks/{STEMS[0]}\.png"),
    ("truncated-image-file", lambda r, g: ((_mask_folder(r, g) / "images" / f"{STEMS[0]}.jpg").write_bytes(
        (g / "images" / f"{STEMS[0]}.jpg").read_bytes()[:200]), r)[-1],
     "error", rf"cannot read image .*images/{STEMS[0]}\.jpg"),
    ("mask-values-neither-0-255-nor-0-1", lambda r, g: _broken_mask_value(_mask_folder(r, g), g) or r,
     "error", rf"mask file .*masks/{STEMS[0]}\.png holds values 0, 63, none above 128: not a 0/255 or 0/1 "
              r"binary mask; for an instance-label map give the label in pairs\.csv's object_id column"),
    ("coco-invalid-json", lambda r, g: _coco(r, g, text="{not json"),
     "error", r"instances_val\.json is not valid JSON"),
    ("coco-annotation-without-segmentation", lambda r, g: _coco(r, g, drop_ann=("segmentation",)),
     "error", r"instances_val\.json: annotation 0 \(id 1\) has no 'segmentation'"),
    ("coco-only-crowd", lambda r, g: _coco(r, g, ann={"iscrowd": 1}),
     "error", r"instances_val\.json: no image has an annotation \(1 crowd annotations are skipped; "
              r"include_crowd / --include-crowd keeps them\)"),
    ("coco-rle-of-another-size", lambda r, g: _coco(r, g, ann={"segmentation": ds.rle_encode(np.ones((5, 5), bool))}),
     "error", r"cannot read the mask of object 1 of .*\.jpg: ValueError: RLE size \(5, 5\) differs"),
    ("sa1b-invalid-json", lambda r, g: (r.mkdir(), shutil.copy(g / "images" / f"{STEMS[0]}.jpg", r / "sa_1.jpg"),
                                        (r / "sa_1.json").write_text("{"), r)[-1],
     "error", r"the SA-1B annotations of .*sa_1\.jpg are not valid JSON"),
]


@pytest.mark.parametrize("build,exit_code,expect", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_dataset_files(build, exit_code, expect, tmp_path, asset_paths, capsys):
    data = build(tmp_path / "data", asset_paths.grabcut)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, text = _run(capsys, ["--model", "oracle:box", "--data", str(data)])
    text = "\n".join(str(w.message) for w in caught) + "\n" + text
    if exit_code == 0:
        assert code == 0, text
    else:
        assert isinstance(code, str) and code.startswith("esam-eval: "), text
    assert re.search(expect, text), text


def test_binary_masks_0_1_palette_and_1bit_read_as_0_255(tmp_path, asset_paths):
    """The mask rule: a file whose largest value is 1 (0/1 L, palette index 1, a 1-bit image) has 1 = object;
    0/255 is > 128; an object_id selects its label value; ignore files alike."""
    g = asset_paths.grabcut
    gt = _gt(g, STEMS[1])
    ign = np.asarray(Image.open(g / "ignore" / f"{STEMS[1]}.png")) > 128
    pal = Image.fromarray(gt.astype(np.uint8), mode="L").convert("P")
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    labels = np.where(gt, 3, 0).astype(np.uint8)
    labels[:5, :5] = 9  # another object
    files = {"l01.png": Image.fromarray(gt.astype(np.uint8)), "p01.png": pal, "bit.png": Image.fromarray(gt).convert("1"),
             "l0255.png": Image.fromarray(gt.astype(np.uint8) * 255), "labels.png": Image.fromarray(labels),
             "ign01.png": Image.fromarray(ign.astype(np.uint8))}
    for name, im in files.items():
        im.save(tmp_path / name)
    assert Image.open(tmp_path / "p01.png").mode == "P" and Image.open(tmp_path / "bit.png").mode == "1"
    for name in ("l01.png", "p01.png", "bit.png", "l0255.png", "ign01.png"):
        want = ign if name.startswith("ign") else gt
        np.testing.assert_array_equal(ds.read_binary_mask(tmp_path / name), want)
    np.testing.assert_array_equal(ds.read_binary_mask(tmp_path / "labels.png", 3), gt)
    np.testing.assert_array_equal(ds.read_binary_mask(tmp_path / "l01.png", 255), gt)  # 255 = a binary mask
    # Through esam-eval: a 0/1 mask folder scores exactly as the 0/255 one.
    ref = _mask_folder(tmp_path / "ref", g, pairs=False)
    ones = _mask_folder(tmp_path / "ones", g, pairs=False)
    for p in list((ones / "masks").iterdir()) + list((ones / "ignore").iterdir()):
        Image.fromarray((np.asarray(Image.open(p)) > 128).astype(np.uint8)).save(p)
    a, b = (ev.evaluate(ev.BoxOracle(), ds.read_mask_folder(d), "box") for d in (ref, ones))
    assert a["n"] == b["n"] == 2 and b["n_skipped"] == 0
    assert [it["iou"] for it in a["per_item"]] == [it["iou"] for it in b["per_item"]]
    assert [it["ignore_px"] for it in b["per_item"]] == [0, int(ign.sum())] and ign.sum() > 0


class FakeHub:
    """`es.from_pretrained` that records its argument and finds nothing (no network in tests)."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, **kw):
        from efficient_sam.errors import CheckpointNotFoundError

        self.calls.append(name)
        raise CheckpointNotFoundError(f"{name}: not in the cache")


GRABCUT_ARG = ["--data", str(GRABCUT)]
BAD_CLI = [
    ("limit-0", ["--model", "oracle:box", *GRABCUT_ARG, "--limit", "0"], r"argument --limit: 0 is not >= 1"),
    ("limit-negative", ["--model", "oracle:box", *GRABCUT_ARG, "--limit", "-1"], r"argument --limit: -1 is not >= 1"),
    ("limit-not-int", ["--model", "oracle:box", *GRABCUT_ARG, "--limit", "two"], r"argument --limit: 'two' is not an integer"),
    ("dilation-ratio-negative", ["--model", "oracle:box", *GRABCUT_ARG, "--dilation-ratio", "-1"],
     r"argument --dilation-ratio: -1 is not in \[0, 1\]"),
    ("dilation-ratio-above-1", ["--model", "oracle:box", *GRABCUT_ARG, "--dilation-ratio", "1.5"],
     r"argument --dilation-ratio: 1.5 is not in \[0, 1\]"),
    ("dilation-ratio-nan", ["--model", "oracle:box", *GRABCUT_ARG, "--dilation-ratio", "nan"],
     r"argument --dilation-ratio: nan is not in \[0, 1\]"),
    ("max-prompts-0", ["--model", "oracle:box", *GRABCUT_ARG, "--max-prompts", "0"], r"argument --max-prompts: 0 is not >= 1"),
    ("seed-negative", ["--model", "oracle:box", *GRABCUT_ARG, "--seed", "-1"], r"argument --seed: -1 is not >= 0"),
    ("json-is-a-folder", ["--model", "oracle:box", *GRABCUT_ARG, "--json", "{tmp}"], r"argument --json: .* is a folder"),
    ("device-unknown", ["--model", "oracle:box", *GRABCUT_ARG, "--device", "gpu0"], r"argument --device: .*gpu0"),
    ("data-missing", ["--model", "oracle:box", "--data", "{tmp}/nowhere"], r"dataset path .*nowhere does not exist"),
    ("data-of-unknown-layout", ["--model", "oracle:box", "--data", "{tmp}"], r"cannot tell the layout of .*: expected"),
    ("images-not-a-folder", ["--model", "oracle:box", "--data", "{coco}", "--images", "{tmp}/nowhere"],
     r"COCO image folder .*nowhere \(image_dir / --images\) does not exist"),
    ("images-for-a-mask-folder", ["--model", "oracle:box", *GRABCUT_ARG, "--images", "{tmp}"],
     r"--images / --include-crowd apply to COCO data, .* is 'masks'"),
    ("model-typo-of-a-registered-name", ["--model", "sam_vit_bb", *GRABCUT_ARG],
     r"--model sam_vit_bb: sam_vit_bb is not a registered model \(did you mean sam_vit_b\?\) nor a local path "
     r"\(registered: efficient_sam_vits, .*sam_vit_l; oracles: oracle:gt, oracle:box\); as a Hub repo: "
     r"sam_vit_bb: not in the cache"),
    ("model-hub-id-not-found", ["--model", "org/sam-model", *GRABCUT_ARG],
     r"--model org/sam-model: org/sam-model is not a registered model nor a local path .*as a Hub repo: "
     r"org/sam-model: not in the cache"),
    ("model-typo-of-an-oracle", ["--model", "oracle:bx", *GRABCUT_ARG],
     r"--model oracle:bx: unknown oracle \(did you mean oracle:box\?\); the oracles are oracle:gt, oracle:box"),
    ("checkpoint-for-an-unregistered-name", ["--model", "sam_vit_bb", "--checkpoint", "x.pt", *GRABCUT_ARG],
     r"--checkpoint / --set apply to registered model names only; sam_vit_bb is not a registered model "
     r"\(did you mean sam_vit_b\?\)"),
    ("checkpoint-missing", ["--model", "sam_vit_b", "--checkpoint", "{tmp}/none.pt", *GRABCUT_ARG],
     r"--checkpoint .*none\.pt: .*none\.pt"),
    ("set-unknown-key", ["--model", "sam_vit_b", "--set", "encoder_dpth=1", *GRABCUT_ARG],
     r"--set encoder_dpth=1: unknown override 'encoder_dpth'"),
]


@pytest.mark.parametrize("argv,expect", [c[1:] for c in BAD_CLI], ids=[c[0] for c in BAD_CLI])
def test_cli_rejects_bad_inputs(argv, expect, tmp_path, asset_paths, capsys, monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr(es, "from_pretrained", hub)
    coco = _coco(tmp_path / "coco", asset_paths.grabcut) / "annotations" / "instances_val.json"
    argv = [a.format(tmp=tmp_path, coco=coco) for a in argv]
    code, text = _run(capsys, argv)
    assert code == 2 or (isinstance(code, str) and code.startswith("esam-eval: ")), text
    assert re.search(expect, text), text
    # A name that is not registered still goes to the Hub as it is (real repo ids keep working).
    model = argv[argv.index("--model") + 1]
    assert hub.calls == ([model] if "as a Hub repo" in expect else [])


def test_cli_local_path_model_is_not_a_typo(tmp_path, asset_paths, capsys, monkeypatch):
    """A local folder goes to from_pretrained as it is; its error is not dressed as a typo."""
    def fake(name, **kw):
        raise es.CheckpointError(f"{name}: no config.json")

    monkeypatch.setattr(es, "from_pretrained", fake)
    code, text = _run(capsys, ["--model", str(tmp_path), "--data", str(asset_paths.grabcut)])
    assert code == f"esam-eval: --model {tmp_path}: {tmp_path}: no config.json"


def test_everything_agreement_matches_by_hand():
    """One-to-one greedy matching of two generators' masks, on hand-made masks."""
    from efficient_sam.evaluation.everything import agreement, match_masks

    m = np.zeros((4, 10, 10), bool)
    m[0, :5, :5] = True  # 25 px
    m[1, 5:, 5:] = True
    m[2, :5, :4] = True  # 20 px inside m[0]: IoU 0.8 with it
    m[3, 0, 0] = True
    a, b = torch.as_tensor(m[[0, 1]]), torch.as_tensor(m[[2, 0, 3]])
    # m[0] takes its exact copy (IoU 1) first, so m[2] stays unmatched; m[1] overlaps nothing
    assert match_masks(a, b) == [(0, 1, 1.0)]
    assert match_masks(torch.as_tensor(m[[2]]), torch.as_tensor(m[[0]])) == [(0, 0, pytest.approx(0.8))]
    assert match_masks(torch.as_tensor(m[[2]]), torch.as_tensor(m[[0]]), min_iou=0.81) == []
    recs = lambda idx: [{"segmentation": m[i]} for i in idx]  # noqa: E731
    ag = agreement([recs([0, 1]), recs([2])], [recs([2, 0, 3]), recs([0])])
    assert ag["matched_miou"] == pytest.approx(0.9) and ag["recall"] == pytest.approx(2 / 3)
    assert ag["precision"] == pytest.approx(2 / 4) and ag["count_changed"] == 0.5
    with pytest.raises(ValueError, match="different sizes"):
        match_masks(a, torch.zeros(1, 5, 5, dtype=torch.bool))


def test_everything_mask_recall_against_direct_iou(records):
    """AR@N (COCOeval, class-agnostic) on real GrabCut masks: the ground truth as the output gives 1; one
    filled box per image gives the mean over images and IoU thresholds 0.50:0.05:0.95 of [IoU >= t],
    computed here directly; no output gives 0."""
    from efficient_sam.datasets import mask_to_box
    from efficient_sam.evaluation.everything import mask_recall

    recs = records[:4]
    gts = [[r.objects[0].mask()] for r in recs]
    as_records = lambda masks, score=0.9: [{"segmentation": m, "predicted_iou": score} for m in masks]  # noqa: E731
    assert mask_recall([as_records(g) for g in gts], gts) == {"AR@100": 1.0, "AR@1000": 1.0}
    boxes, expect = [], []
    for (g,) in gts:
        x0, y0, x1, y1 = mask_to_box(g)
        b = np.zeros_like(g)
        b[y0:y1, x0:x1] = True
        boxes.append([b])
        iou = (b & g).sum() / (b | g).sum()
        expect.append(np.mean([iou >= t for t in np.linspace(0.5, 0.95, 10)]))
    got = mask_recall([as_records(b) for b in boxes], gts, max_dets=(1, 100))
    assert got["AR@1"] == got["AR@100"] == pytest.approx(float(np.mean(expect)), abs=1e-9)
    assert 0 < got["AR@1"] < 1
    # a second, lower-ranked wrong mask per image: AR@1 ranks by score, so it does not change
    noise = [as_records(b, 0.9) + as_records([~g[0]], 0.1) for b, g in zip(boxes, gts)]
    assert mask_recall(noise, gts, max_dets=(1,))["AR@1"] == pytest.approx(got["AR@1"])
    assert mask_recall([[] for _ in gts], gts) == {"AR@100": 0.0, "AR@1000": 0.0}
    with pytest.raises(ValueError, match="2 images of generator records but 4"):
        mask_recall([as_records(g) for g in gts[:2]], gts)
    with pytest.raises(ValueError, match="image 0: generator masks are"):
        mask_recall([as_records([g[0][:-1]]) for g in gts], gts)


def test_cli_protocol_everything(tmp_path, asset_paths, capsys, records):
    """`esam-eval --protocol everything` on bundled GrabCut images with a tiny random SAM: recall, the
    agreement with another (randomly initialised) model, and with itself through the library (all masks
    matched, IoU 1); options of other protocols rejected."""
    from efficient_sam.evaluation.everything import evaluate_everything
    from benchmarks import evaluate as ev

    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "e.json"
    argv = ["--protocol", "everything", "--model", "sam_vit_b", *sets, "--data", str(asset_paths.grabcut),
            "--limit", "2", "--points-per-side", "6", "--pred-iou-thresh", "-10", "--stability-score-thresh", "0",
            "--box-nms-thresh", "1.0", "--against", "sam_vit_b", "--json", str(out), "--no-progress"]
    assert ev.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["protocol"] == "everything" and res["n"] == 2 and res["n_images"] == 2
    assert 0 <= res["AR@100"] <= res["AR@1000"] <= 1 and res["masks_per_image"] >= 30
    ag = res["agreement"]
    assert ag["n_images"] == 2 and 0 <= ag["recall"] <= 1 and ag["per_image"][0]["n_reference"] >= 30
    assert res["generator"]["points_per_side"] == 6 and res["against"] == "sam_vit_b"
    gen = es.SamAutomaticMaskGenerator(es.build_model("sam_vit_b", **TINY).eval(), points_per_side=4,
                                       pred_iou_thresh=-10, stability_score_thresh=0, box_nms_thresh=1.0)
    self_ag = evaluate_everything(gen, records[:1], against=gen)["agreement"]
    assert self_ag["matched_miou"] == pytest.approx(1.0) and self_ag["recall"] == 1.0 and self_ag["count_changed"] == 0
    capsys.readouterr()
    for bad, msg in ((["--fast"], "belong to --protocol everything"), (["--protocol", "clicks", "--against", "x"], "belong")):
        with pytest.raises(SystemExit):
            ev.main(["--model", "oracle:gt", "--data", str(asset_paths.grabcut), *bad])
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit, match="mask generator"):
        ev.main(["--protocol", "everything", "--model", "oracle:gt", "--data", str(asset_paths.grabcut), "--no-progress"])
