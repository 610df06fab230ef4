"""COCO / LVIS evaluation (`efficient_sam.evaluation.coco`, `benchmarks.eval_coco`) on a small COCO JSON
built from the real GrabCut pairs: every human mask one instance (2 categories), a third of the images
downscaled by 3 and a third by 8 so that all COCO size buckets occur. Oracles give known numbers; the
AP and Boundary AP of box-filled and of shifted GT masks are recomputed here independently (numpy IoU,
the gist's OpenCV erosion, a direct 101-point AP); 1 and 2 processes agree (forked in-process, and
through `accelerate launch`); bad input gives a clear error or a counted skip."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import efficient_sam as es
from efficient_sam import evaluation as ev
from efficient_sam.datasets import DatasetError
from efficient_sam.evaluation import coco as cc
from efficient_sam.evaluation.metrics import mask_to_boundary

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
TINY = dict(encoder_img_size=256, encoder_depth=1, encoder_embed_dim=64, encoder_num_heads=2,
            encoder_global_attn_indexes=(0,))


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mu

    r = mu.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode()}


def _box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


@pytest.fixture(scope="module")
def coco(tmp_path_factory, asset_paths):
    """{json, images, masks: {ann_id: HxW bool}, anns, dets (GT boxes as detections, distinct scores)}."""
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    rows = list(csv.DictReader(open(asset_paths.grabcut / "pairs.csv")))
    images, anns, masks, dets = [], [], {}, []
    for i, row in enumerate(rows):
        im = Image.open(asset_paths.grabcut / row["image"]).convert("RGB")
        m = Image.fromarray((np.asarray(Image.open(asset_paths.grabcut / row["mask"])) > 128).astype(np.uint8) * 255)
        scale = (1, 3, 8)[i % 3]
        if scale > 1:
            size = (im.width // scale, im.height // scale)
            im, m = im.resize(size, Image.BILINEAR), m.resize(size, Image.NEAREST)
        name = f"{row['name']}.png"
        im.save(root / "images" / name)
        g = np.asarray(m) > 128
        images.append({"id": i + 1, "file_name": name, "height": g.shape[0], "width": g.shape[1]})
        ann_id = 1000 - 7 * i  # ids not in image order: the rows are sorted by annotation id
        masks[ann_id] = g
        anns.append({"id": ann_id, "image_id": i + 1, "category_id": 1 + i % 2, "iscrowd": 0,
                     "segmentation": _rle(g), "area": int(g.sum()), "bbox": _box(g)})
        score = 0.3 + 0.6 * ((i * 17) % 50) / 50  # distinct, not in image order
        dets.append({"image_id": i + 1, "category_id": 1 + i % 2, "bbox": _box(g), "score": score})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "stuff"}]}
    (root / "instances.json").write_text(json.dumps(data))
    (root / "dets.json").write_text(json.dumps(dets))
    return {"root": root, "json": root / "instances.json", "images": root / "images", "data": data, "masks": masks,
            "dets": dets, "det_path": root / "dets.json"}


# ------------------------------------------------------------------------------------------------
# Independent references: numpy IoU, the Boundary-IoU gist's OpenCV erosion, a direct COCO AP
# ------------------------------------------------------------------------------------------------


def np_iou(p, g) -> float:
    return float((p & g).sum() / (p | g).sum())


def cv_boundary(mask, ratio=0.02):
    """Cheng et al.'s gist: pad 1 px of zeros, erode d times with a 3x3 kernel, crop, subtract."""
    import cv2

    h, w = mask.shape
    d = max(1, int(round(ratio * np.sqrt(h * h + w * w))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1 : h + 1, 1 : w + 1]
    return mask & ~eroded.astype(bool)


def direct_ap(items, t_list, area_rng=(0, 1e10)):
    """COCO AP (101-point interpolated precision, averaged over categories and IoU thresholds) for
    images holding one GT and one detection each: `items` = [(category, score, iou, gt_area, det_area)]."""
    lo, hi = area_rng
    aps = []
    for t in t_list:
        for cat in sorted({c for c, *_ in items}):
            sub = sorted((it for it in items if it[0] == cat), key=lambda it: -it[1])
            n_gt = sum(lo <= ga <= hi for _, _, _, ga, _ in sub)
            if n_gt == 0:
                continue
            tp, fp = [], []
            for _, _, iou, ga, da in sub:
                if iou >= t:  # matched to its GT: ignored with it
                    if lo <= ga <= hi:
                        tp.append(1), fp.append(0)
                elif lo <= da <= hi:  # unmatched detection in the area range: a false positive
                    tp.append(0), fp.append(1)
            tp, fp = np.cumsum(tp), np.cumsum(fp)
            rec = tp / n_gt
            prec = tp / np.maximum(tp + fp, np.spacing(1))
            prec = np.maximum.accumulate(prec[::-1])[::-1] if len(prec) else prec
            q = [prec[k] if (k := np.searchsorted(rec, r, side="left")) < len(rec) else 0.0
                 for r in np.linspace(0, 1, 101)]
            aps.append(np.mean(q))
    return float(np.mean(aps))


THRESHOLDS = np.linspace(0.5, 0.95, 10)


def box_mask(shape, bbox):
    x, y, w, h = bbox
    p = np.zeros(shape, bool)
    p[y : y + h, x : x + w] = True
    return p


# ------------------------------------------------------------------------------------------------
# GT prompts: mIoU with the size breakdown
# ------------------------------------------------------------------------------------------------


def test_gt_oracle_box_and_point_miou_is_one_with_size_breakdown(coco):
    for prompt in ("box", "point"):
        res = cc.evaluate_coco(ev.GroundTruthOracle(), coco["json"], coco["images"], prompt=prompt)
        assert res["miou"] == 1.0 and res["mbiou"] == 1.0 and res["n"] == 50 and res["n_skipped"] == 0
        areas = [a["area"] for a in coco["data"]["annotations"]]
        counts = {"small": sum(a < 32**2 for a in areas), "medium": sum(32**2 <= a < 96**2 for a in areas),
                  "large": sum(a >= 96**2 for a in areas)}
        assert all(counts.values()), counts  # the fixture has every bucket
        assert {s: res[f"n_{s}"] for s in counts} == counts
        assert all(res[f"miou_{s}"] == 1.0 for s in counts)
        assert [r["ann_id"] for r in res["per_item"]] == sorted(coco["masks"])
    assert "farthest from the boundary" in res["point_rule"]
    for r in res["per_item"]:  # the point lies inside its mask
        x, y = (int(v) for v in r["point"])
        assert coco["masks"][r["ann_id"]][y, x]


def test_box_oracle_miou_matches_numpy_and_prompts_are_gt_boxes(coco):
    res = cc.evaluate_coco(ev.BoxOracle(), coco["json"], coco["images"], prompt="box", max_prompts=1)
    by_id = {a["id"]: a for a in coco["data"]["annotations"]}
    for r in res["per_item"]:
        a, g = by_id[r["ann_id"]], coco["masks"][r["ann_id"]]
        x, y, w, h = a["bbox"]
        assert r["box"] == [x, y, x + w, y + h]
        assert r["iou"] == pytest.approx(np_iou(box_mask(g.shape, a["bbox"]), g), abs=1e-12)
        assert r["size"] == ("small" if a["area"] < 1024 else "medium" if a["area"] < 9216 else "large")
    large = [r["iou"] for r in res["per_item"] if r["size"] == "large"]
    assert res["miou_large"] == pytest.approx(np.mean(large), abs=1e-12)


def test_center_point_rule_on_hand_made_masks():
    m = np.zeros((9, 11), bool)
    m[2:7, 2:9] = True  # 5 x 7: distance 3 on row 4 at columns 4..6 -> the first, (4, 4)
    assert cc.center_point(m).tolist() == [4.0, 4.0]
    full = np.ones((3, 5), bool)  # the image edge counts as boundary (1 px zero border)
    assert cc.center_point(full).tolist() == [1.0, 1.0]
    ring = np.zeros((21, 21), bool)
    ring[2:19, 2:19] = True
    ring[6:15, 6:15] = False  # a 4 px square ring: its centroid (10, 10) is outside it
    # On its sides no pixel is more than 2 from the background; at the corners (4, 4) is 3 from the
    # outside and sqrt(8) from the hole's corner (6, 6): the 4 corners tie, (4, 4) comes first.
    x, y = (int(v) for v in cc.center_point(ring))
    assert ring[y, x] and (x, y) == (4, 4)
    with pytest.raises(ValueError, match="empty"):
        cc.center_point(np.zeros((4, 4), bool))


def test_boundary_band_equals_mask_to_boundary(coco):
    for g in list(coco["masks"].values())[::4]:
        assert (cc.boundary_band(g) == mask_to_boundary(g)).all()
        assert (cc.boundary_band(g) == cv_boundary(g)).all()
    m = np.zeros((40, 60), bool)
    m[0:3, 50:60] = True  # at the image corner, smaller than d
    assert (cc.boundary_band(m) == mask_to_boundary(m)).all() and not cc.boundary_band(np.zeros((5, 5), bool)).any()


# ------------------------------------------------------------------------------------------------
# Detections: segm AP and Boundary AP
# ------------------------------------------------------------------------------------------------


def test_gt_masks_as_results_and_gt_oracle_give_ap_one(coco):
    gt = cc.load_coco_gt(coco["json"], coco["images"])
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": 1.0} for a in coco["data"]["annotations"]]
    ap = cc.coco_segm_ap(gt, results)
    assert all(ap[k] == 1.0 for k in cc.AP_KEYS) and all(ap[f"boundary_{k}"] == 1.0 for k in cc.AP_KEYS)
    res = cc.evaluate_coco(ev.GroundTruthOracle(), gt, detections=coco["det_path"], keep_results=True)
    assert res["mode"] == "detections" and res["n_detections"] == 50
    assert all(res[k] == 1.0 for k in cc.AP_KEYS) and res["boundary_AP"] == 1.0
    assert len(res["results"]) == 50 and {"image_id", "category_id", "segmentation", "score"} == set(res["results"][0])


class ShiftOracle:
    """The GT mask moved by 0-5 px (from the image's first pixel): high mask IoU, lower boundary IoU."""

    family = "oracle"
    uses_targets = True

    @staticmethod
    def shift(image) -> int:
        return int(image[0, 0, 0]) % 6

    def predict_batch(self, image, boxes=None, points=None, labels=None, multimask_output=True, targets=None):
        s = self.shift(image)
        return np.roll(targets, (s, s), axis=(1, 2)), np.ones(len(targets), np.float32)


@pytest.mark.parametrize("oracle", ["box", "shift"])
def test_ap_and_boundary_ap_match_a_direct_computation(oracle, coco):
    """COCOeval through our masks vs numpy IoU, the gist's boundary and a direct AP: box-filled masks
    (Boundary AP 0: every boundary IoU < 0.5) and shifted GT masks (Boundary AP well inside (0, AP))."""
    model = ev.BoxOracle() if oracle == "box" else ShiftOracle()
    res = cc.evaluate_coco(model, coco["json"], coco["images"], detections=coco["det_path"])
    by_img = {a["image_id"]: a for a in coco["data"]["annotations"]}
    items, bitems = [], []
    for d in coco["dets"]:
        a = by_img[d["image_id"]]
        g = coco["masks"][a["id"]]
        if oracle == "box":
            p = box_mask(g.shape, d["bbox"])
        else:
            name = coco["data"]["images"][a["image_id"] - 1]["file_name"]
            s = ShiftOracle.shift(np.asarray(Image.open(coco["images"] / name).convert("RGB")))
            p = np.roll(g, (s, s), axis=(0, 1))
        iou = np_iou(p, g)
        biou = min(iou, np_iou(cv_boundary(p), cv_boundary(g)))
        items.append((d["category_id"], d["score"], iou, a["area"], int(p.sum())))
        bitems.append((d["category_id"], d["score"], biou, a["area"], int(p.sum())))
    low, high = (0.05, 0.95)
    assert low < res["AP"] < high
    assert res["boundary_AP"] == 0 if oracle == "box" else low < res["boundary_AP"] < res["AP"]
    for prefix, its in (("", items), ("boundary_", bitems)):
        assert res[f"{prefix}AP"] == pytest.approx(direct_ap(its, THRESHOLDS), abs=1e-9)
        assert res[f"{prefix}AP50"] == pytest.approx(direct_ap(its, [0.5]), abs=1e-9)
        assert res[f"{prefix}AP75"] == pytest.approx(direct_ap(its, [0.75]), abs=1e-9)
        for key, rng in (("AP_S", (0, 32**2)), ("AP_M", (32**2, 96**2)), ("AP_L", (96**2, 1e10))):
            assert res[prefix + key] == pytest.approx(direct_ap(its, THRESHOLDS, rng), abs=1e-9), prefix + key


def test_lvis_style_json_loads(coco, tmp_path):
    """LVIS: images by `coco_url` (no file_name), federated keys, annotations without iscrowd."""
    data = json.loads(coco["json"].read_text())
    (tmp_path / "val2017").mkdir()
    for im in data["images"][:6]:
        shutil.copy(coco["images"] / im["file_name"], tmp_path / "val2017" / im["file_name"])
        im["coco_url"] = f"http://images.cocodataset.org/val2017/{im.pop('file_name')}"
        im.update(not_exhaustive_category_ids=[2], neg_category_ids=[1])
    data["images"] = data["images"][:6]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] <= 6]
    for a in data["annotations"]:
        del a["iscrowd"]
    (tmp_path / "lvis_v1_val.json").write_text(json.dumps(data))
    for images in (tmp_path, tmp_path / "val2017"):  # <split>/<name> or <name> under --images
        res = cc.evaluate_coco(ev.GroundTruthOracle(), tmp_path / "lvis_v1_val.json", images)
        assert res["miou"] == 1.0 and res["n"] == 6
    dets = [d for d in coco["dets"] if d["image_id"] <= 6]
    res = cc.evaluate_coco(ev.GroundTruthOracle(), tmp_path / "lvis_v1_val.json", tmp_path, detections=dets)
    assert res["AP"] == 1.0


# ------------------------------------------------------------------------------------------------
# A real (random, tiny) model; the CLI functions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sam_vit_b", "efficient_sam_vitt"])
def test_random_weight_model_runs_every_mode(name, coco):
    torch.manual_seed(0)
    model = ev.PredictorModel(es.build_model(name, **TINY))
    gt = cc.load_coco_gt(coco["json"], coco["images"])
    for prompt in ("box", "point"):
        res = cc.evaluate_coco(model, gt, prompt=prompt, limit=4, max_prompts=2)
        assert res["n"] == 4 and 0 <= res["miou"] <= 1 and 0 <= res["mbiou"] <= 1
        assert {"ann_id", "image_id", "category_id", "area", "size", "iou", "biou", "score"} <= set(res["per_item"][0])
        multi = name == "efficient_sam_vitt" or prompt == "point"
        assert res["scored_mask"] == ("most confident of 3" if multi else "single-mask output")
    res = cc.evaluate_coco(model, gt, detections=coco["det_path"], limit=3)
    assert res["n_detections"] == 3 and res["n_gt_images"] == 3
    assert all(0 <= res[k] <= 1 or res[k] == -1 for k in cc.AP_KEYS) and len(res["stats"]) == 12


def test_cli_functions(coco, tmp_path):
    from benchmarks import eval_coco

    p = argparse.ArgumentParser()
    p.add_argument("--images")  # as esam-eval's parser has: not added twice
    eval_coco.add_arguments(p)
    out = tmp_path / "segm.json"
    args = p.parse_args(["--annotations", str(coco["json"]), "--images", str(coco["images"]),
                         "--detections", str(coco["det_path"]), "--coco-results", str(out)])
    res = eval_coco.run(args, ev.BoxOracle())
    assert res["protocol"] == "coco" and res["mode"] == "detections" and 0 < res["AP"] < 1
    assert len(json.loads(out.read_text())) == 50
    args = p.parse_args(["--annotations", str(coco["json"]), "--images", str(coco["images"]), "--coco-prompt", "point"])
    assert eval_coco.run(args, ev.GroundTruthOracle())["miou"] == 1.0
    with pytest.raises(SystemExit, match="holds no detections"):
        (tmp_path / "empty.json").write_text("[]")
        eval_coco.run(p.parse_args(["--annotations", str(coco["json"]), "--detections", str(tmp_path / "empty.json")]),
                      ev.BoxOracle())


# ------------------------------------------------------------------------------------------------
# 1 vs 2 processes
# ------------------------------------------------------------------------------------------------


def _two_process_worker(json_path, images, det_path, out_dir):
    """Run in each of the 2 forked debug_launcher processes: the same evaluations, written by the main
    process. One thread: OpenMP's pool does not survive a fork (a parent that ran models would hang
    the children); a fresh accelerate state: the parent's may have been copied."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    torch.set_num_threads(1)
    AcceleratorState._reset_state(True)
    torch.manual_seed(0)
    tiny = ev.PredictorModel(es.build_model("sam_vit_b", **TINY))
    out = {
        "box": cc.evaluate_coco_distributed(ev.BoxOracle(), json_path, images),
        "point": cc.evaluate_coco_distributed(tiny, json_path, images, prompt="point", limit=7),
        "dets": cc.evaluate_coco_distributed(ev.BoxOracle(), json_path, images, detections=det_path),
    }
    state = PartialState()
    assert state.num_processes == 2 and state.distributed_type == "MULTI_CPU" and state.distributed_type == "MULTI_CPU"
    if state.is_main_process:
        (out_dir / "two.json").write_text(json.dumps(out))


def _comparable(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("seconds", "num_processes")}


@pytest.mark.distributed
def test_one_and_two_processes_agree(coco, tmp_path, monkeypatch):
    from accelerate import debug_launcher

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # accelerate would set 2 threads in the children
    debug_launcher(_two_process_worker, args=(coco["json"], coco["images"], coco["det_path"], tmp_path),
                   num_processes=2)
    two = json.loads((tmp_path / "two.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels as the children: bit-identical model outputs
    try:
        torch.manual_seed(0)
        tiny = ev.PredictorModel(es.build_model("sam_vit_b", **TINY))
        one = {
            "box": cc.evaluate_coco(ev.BoxOracle(), coco["json"], coco["images"]),
            "point": cc.evaluate_coco(tiny, coco["json"], coco["images"], prompt="point", limit=7),
            "dets": cc.evaluate_coco(ev.BoxOracle(), coco["json"], coco["images"], detections=coco["det_path"]),
        }
    finally:
        torch.set_num_threads(threads)
    for key in one:
        assert two[key]["num_processes"] == 2
        assert _comparable(two[key]) == json.loads(json.dumps(_comparable(one[key]))), key


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def _variant(coco, tmp_path, edit) -> tuple:
    data = json.loads(coco["json"].read_text())
    data["images"], data["annotations"] = data["images"][:3], [a for a in data["annotations"] if a["image_id"] <= 3]
    edit(data)
    (tmp_path / "v.json").write_text(json.dumps(data))
    return tmp_path / "v.json", data


def test_crowd_annotations_are_skipped_and_counted(coco, tmp_path):
    def add_crowd(data):
        a = dict(data["annotations"][0], id=5, iscrowd=1)
        data["annotations"].append(a)

    path, _ = _variant(coco, tmp_path, add_crowd)
    res = cc.evaluate_coco(ev.GroundTruthOracle(), path, coco["images"])
    assert res["n"] == 3 and res["n_crowd"] == 1 and res["n_skipped"] == 1
    assert res["skipped"] == [{"image_id": 1, "ann_id": 5, "reason": "iscrowd"}]


def test_prompts_of_an_image_go_in_batched_calls(coco, tmp_path):
    class Recording(ev.BoxOracle):
        def __init__(self):
            self.calls = []

        def predict_batch(self, image, boxes=None, **kw):
            self.calls.append(len(boxes))
            return super().predict_batch(image, boxes=boxes, **kw)

    def five_on_image_1(data):  # the same real mask 4 more times
        data["annotations"] += [dict(data["annotations"][0], id=1 + k) for k in range(4)]

    path, data = _variant(coco, tmp_path, five_on_image_1)
    model = Recording()
    res = cc.evaluate_coco(model, path, coco["images"], max_prompts=2)
    assert model.calls == [2, 2, 1, 1, 1] and res["n"] == 7  # image 1: 5 prompts; images 2, 3: 1 each
    assert len({r["iou"] for r in res["per_item"] if r["image_id"] == 1}) == 1
    model = Recording()
    cc.evaluate_coco(model, path, coco["images"], detections=coco["dets"][:3] * 3, max_prompts=4)
    assert model.calls == [3, 3, 3]  # the 3 detections of each image in one call


def test_bad_inputs_give_clear_errors(coco, tmp_path):
    def bad_rle(data):
        a = data["annotations"][1]
        h, w = a["segmentation"]["size"]
        a["segmentation"] = _rle(np.ones((h + 1, w), bool))

    path, _ = _variant(coco, tmp_path, bad_rle)
    with pytest.raises(DatasetError, match=r"v\.json: annotation 993 .*segmentation is \d+x\d+ \(HxW\), its image"):
        cc.evaluate_coco(ev.GroundTruthOracle(), path, coco["images"])

    imgs = tmp_path / "imgs"
    shutil.copytree(coco["images"], imgs)
    name = coco["data"]["images"][2]["file_name"]
    Image.open(imgs / name).transpose(Image.Transpose.TRANSPOSE).save(imgs / name)  # HxW -> WxH
    with pytest.raises(DatasetError, match=rf"image .*{name} is \d+x\d+ \(HxW\) but .* gives"):
        cc.evaluate_coco(ev.BoxOracle(), coco["json"], imgs, limit=3)
    (imgs / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"image file .*{name} .*does not exist"):
        cc.evaluate_coco(ev.BoxOracle(), coco["json"], imgs, limit=3)

    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DatasetError, match="empty.json holds no detections"):
        cc.evaluate_coco(ev.BoxOracle(), coco["json"], coco["images"], detections=tmp_path / "empty.json")
    for dets, match in (([dict(coco["dets"][0], image_id=12345)], r"1 image id\(s\) not in .* e.g. \[12345\]"),
                        ([dict(coco["dets"][0], category_id=9)], r"category id\(s\) not in"),
                        ([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], "detection 0 has no 'category_id'"),
                        ([dict(coco["dets"][0], bbox=[0, 0, 1])], "is not 4 finite numbers")):
        with pytest.raises(DatasetError, match=match):
            cc.evaluate_coco(ev.BoxOracle(), coco["json"], coco["images"], detections=dets)
    with pytest.raises(DatasetError, match="not valid JSON"):
        (tmp_path / "broken.json").write_text("{")
        cc.load_coco_gt(tmp_path / "broken.json", coco["images"])
    with pytest.raises(ValueError, match="prompt='box'"):
        cc.evaluate_coco(ev.BoxOracle(), coco["json"], coco["images"], detections=coco["det_path"], prompt="point")


@pytest.mark.slow
@pytest.mark.distributed
def test_accelerate_launch_two_processes(coco, tmp_path):
    """`accelerate launch --num_processes 2 -m benchmarks.eval_coco` as a user runs it: the main
    process writes the same numbers as one process."""
    from helpers import launch

    args = ["--model", "oracle:box", "--annotations", str(coco["json"]), "--images", str(coco["images"]),
            "--detections", str(coco["det_path"]), "--no-progress"]
    res = launch("benchmarks.eval_coco", [*args, "--json", str(tmp_path / "two.json")], 2)
    assert res.returncode == 0, res.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    one = cc.evaluate_coco(ev.BoxOracle(), coco["json"], coco["images"], detections=coco["det_path"])
    assert two["num_processes"] == 2 and two["n_detections"] == 50
    assert {k: two[k] for k in (*cc.AP_KEYS, "stats", "boundary_stats")} == {k: one[k] for k in
                                                                             (*cc.AP_KEYS, "stats", "boundary_stats")}


def test_esam_eval_protocol_coco(coco, tmp_path, capsys):
    """`esam-eval --protocol coco`: GT boxes and detections from the command line, --data as the JSON."""
    from benchmarks import evaluate as esam_eval

    out = tmp_path / "box.json"
    assert esam_eval.main(["--protocol", "coco", "--model", "oracle:gt", "--data", str(coco["json"]),
                           "--images", str(coco["images"]), "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"] == "coco" and res["model"] == "oracle:gt" and res["miou"] == 1.0 and res["n"] == 50
    assert res["n_small"] + res["n_medium"] + res["n_large"] == 50
    out = tmp_path / "ap.json"
    assert esam_eval.main(["--protocol", "coco", "--model", "oracle:box", "--data", str(coco["json"]),
                           "--detections", str(coco["det_path"]), "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "detections" and 0 < res["AP"] < 1 and "boundary_AP" in res
    capsys.readouterr()
    with pytest.raises(SystemExit):
        esam_eval.main(["--protocol", "coco", "--model", "oracle:gt", "--data", str(coco["json"]), "--fast"])
