"""The interactive-click protocol (`efficient_sam.evaluation.clicks`): the clicker on hand-made masks
whose click sequence is known by hand, NoC / NoF / mIoU@k, the oracles on the bundled GrabCut images,
the model rules of both decoders against `SamPredictor` on small random-weight models, the readers of
the published benchmark layouts (built from the GrabCut files) and `benchmarks/eval_clicks.py`."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import efficient_sam as es
from benchmarks import eval_clicks
from efficient_sam.datasets import DatasetError, open_dataset, read_mask_folder
from efficient_sam.datasets.interactive import detect_interactive_layout, open_interactive_dataset
from efficient_sam.evaluation import clicks as ck
from efficient_sam.evaluation.metrics import mask_iou

TINY = dict(encoder_img_size=256, encoder_depth=1, encoder_embed_dim=64, encoder_num_heads=2,
            encoder_global_attn_indexes=(0,))


@pytest.fixture(scope="module")
def grabcut(asset_paths):
    return read_mask_folder(asset_paths.grabcut)


@pytest.fixture(scope="module")
def with_ignore(grabcut):
    """GrabCut records whose object has an ignore band (the first 3)."""
    return [r for r in grabcut if r.objects[0].ignore() is not None][:3]


def square(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


# ------------------------------------------------------------------------------------------------
# The clicker on hand-made masks


def test_first_click_is_the_centre_of_the_object():
    gt = square((7, 9), 1, 6, 2, 7)  # 5x5: L2 distance to the background 3 at (row 3, col 4) only
    assert ck.next_click(np.zeros_like(gt), gt) == (4, 3, True)
    # That pixel clicked: the 8 pixels around it, all at distance 2, tie; row-major order picks (row 2, col 3).
    clicked = np.zeros_like(gt)
    clicked[3, 4] = True
    assert ck.next_click(np.zeros_like(gt), gt, clicked=clicked) == (3, 2, True)


def test_image_border_counts_as_background():
    # The object touches the top-left corner: the one pixel of zero padding makes the border pixels distance 1.
    gt = square((6, 6), 0, 3, 0, 3)
    assert ck.next_click(np.zeros_like(gt), gt) == (1, 1, True)
    gt = square((4, 6), 1, 3, 0, 6)  # a 2-row band: every pixel at distance 1, the first is (row 1, col 0)
    assert ck.next_click(np.zeros_like(gt), gt) == (0, 1, True)


def test_tie_between_two_objects_takes_the_first_in_row_major_order():
    # Two 3x3 squares, centres (row 5, col 2) and (row 2, col 7): same distance 2; row 2 comes first.
    gt = square((9, 10), 4, 7, 1, 4) | square((9, 10), 1, 4, 6, 9)
    assert ck.next_click(np.zeros_like(gt), gt) == (7, 2, True)


def test_negative_click_when_false_positives_are_deeper_and_on_ties():
    gt = square((12, 12), 1, 4, 1, 4)  # 3x3 object, predicted; plus a 5x5 false positive
    pred = gt | square((12, 12), 6, 11, 6, 11)
    assert ck.next_click(pred, gt) == (8, 8, False)
    # A 3x3 miss (distance 2) and a 3x3 false positive (distance 2): a tie is a negative click.
    gt = square((12, 12), 1, 4, 1, 4)
    pred = square((12, 12), 7, 10, 7, 10)
    assert ck.next_click(pred, gt) == (8, 8, False)
    # No error left at all: RITM's clicker gives a negative click at (0, 0).
    assert ck.next_click(gt, gt) == (0, 0, False)


def test_ignore_band_is_never_an_error():
    gt = square((7, 11), 1, 6, 1, 10)  # 5x9: alone its deepest pixels are (row 3, cols 3..7) at distance 3
    assert ck.next_click(np.zeros_like(gt), gt) == (3, 3, True)
    # The left part ignored: the rest is 5x4 (cols 6..9), whose pixels at distance 2 are rows 2..4 x cols 7..8;
    # ignored pixels count as "not an error", like the background: the first is (row 2, col 7).
    ignore = square((7, 11), 0, 7, 0, 6)
    assert ck.next_click(np.zeros_like(gt), gt, ignore) == (7, 2, True)
    # A prediction spilling into the ignored pixels only is not a false positive: the click stays positive.
    pred = (gt & ~ignore) & ~square((7, 11), 3, 4, 9, 10) | square((7, 11), 0, 7, 0, 1)
    assert ck.next_click(pred, gt, ignore) == (9, 3, True)
    assert mask_iou(pred, gt, ignore) == pytest.approx(19 / 20)


class ComponentModel:
    """A model that is right on every connected part of the object that holds a positive click."""

    family, uses_targets, rules = "test", True, {}

    def set_image(self, image):
        pass

    def predict(self, clicks, labels, prev_logits=None, target=None):
        n, comp = cv2.connectedComponents(target.astype(np.uint8), connectivity=4)
        hit = {comp[int(y), int(x)] for (x, y), lab in zip(clicks, labels) if lab == 1} - {0}
        return np.isin(comp, list(hit)), None


def test_click_loop_sequence_known_by_hand():
    big, small = square((10, 12), 1, 6, 1, 6), square((10, 12), 6, 9, 8, 11)  # 5x5 and 3x3
    gt = big | small
    r = ck.click_object(ComponentModel(), gt, max_clicks=5, stop_iou=0.95)
    # Click 1: centre of the 5x5 (distance 3) -> IoU 25/34; click 2: centre of the 3x3 -> IoU 1, stop.
    assert r["clicks"] == [[3, 3, 1], [9, 7, 1]]
    assert r["ious"] == pytest.approx([25 / 34, 1.0])
    assert ck.noc(r["ious"], 0.7, 5) == 1 and ck.noc(r["ious"], 0.9, 5) == 2 and ck.noc([0.2], 0.9, 5) == 5


def test_summary_carries_the_last_iou_forward():
    s = ck.summarize([[0.5, 0.9], [0.2, 0.4, 0.6]], thresholds=(0.5, 0.85), max_clicks=3)
    assert s["noc"] == {"50": 2.0, "85": 2.5} and s["nof"] == {"50": 0, "85": 1}
    assert s["miou_at_clicks"] == pytest.approx([0.35, 0.65, 0.75])


# ------------------------------------------------------------------------------------------------
# Oracles on the bundled GrabCut images


def test_oracles_on_grabcut(with_ignore):
    gt = ck.evaluate_clicks("oracle:gt", with_ignore)
    assert gt["n"] == 3 and gt["noc"] == {"85": 1.0, "90": 1.0, "95": 1.0} and gt["nof"] == {"85": 0, "90": 0, "95": 0}
    assert all(o["ious"] == [1.0] for o in gt["per_object"])
    assert gt["miou_at_clicks"] == [1.0] * 20  # carried forward from click 1
    empty = ck.evaluate_clicks("oracle:empty", with_ignore)
    assert empty["noc"] == {"85": 20.0, "90": 20.0, "95": 20.0} and empty["nof"] == {"85": 3, "90": 3, "95": 3}
    assert empty["miou_at_clicks"] == [0.0] * 20
    for o, rec in zip(empty["per_object"], with_ignore):
        g, ig = rec.objects[0].mask(), rec.objects[0].ignore()
        pts = [(x, y) for x, y, lab in o["clicks"]]
        assert len(pts) == 20 == len(set(pts)) and all(lab == 1 for *_, lab in o["clicks"])
        assert all(g[y, x] and not ig[y, x] for x, y in pts)  # inside the object, outside the band
    # The single-prompt ground-truth oracle maps to the click one; the box oracle has no click form.
    from efficient_sam.evaluation import GroundTruthOracle

    assert ck.evaluate_clicks(GroundTruthOracle(), with_ignore[:1], max_clicks=3)["noc"]["95"] == 1.0
    with pytest.raises(SystemExit, match="oracle:gt, oracle:empty"):
        ck.load_click_model("oracle:box", None, {}, "cpu", "fp32")
    with pytest.raises(ValueError, match="thresholds"):
        ck.evaluate_clicks("oracle:gt", with_ignore, thresholds=(0.9, 1.5))


# ------------------------------------------------------------------------------------------------
# Real models: the rules of both decoders against SamPredictor


class Recording(ck.SamClickModel):
    """The real click model, keeping what each call got and returned."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = []

    def predict(self, clicks, labels, prev_logits=None, **kw):
        mask, logits = super().predict(clicks, labels, prev_logits, **kw)
        self.calls.append((np.array(clicks), np.array(labels), prev_logits, mask, logits))
        return mask, logits


def _model(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        return es.build_model(name, **TINY).eval()


@pytest.fixture(scope="module")
def sam():
    return _model("sam_vit_b")


@pytest.fixture(scope="module")
def esam():
    return _model("efficient_sam_vitt")


def _per_object_calls(cm, res):
    """Split the recorded calls into the objects of `res` (in order)."""
    out, i = [], 0
    for o in res["per_object"]:
        out.append(cm.calls[i : i + len(o["ious"])])
        i += len(o["ious"])
    assert i == len(cm.calls)
    return out


def _check_structure(res, cm, records, max_clicks):
    assert res["n"] == 2 and res["n_images"] == 2 and res["max_clicks"] == max_clicks
    assert set(res["noc"]) == set(res["nof"]) == {"85", "90", "95"} and len(res["miou_at_clicks"]) == max_clicks
    for o, calls, rec in zip(res["per_object"], _per_object_calls(cm, res), records):
        n = len(o["ious"])
        assert 1 <= n <= max_clicks and len(o["clicks"]) == n
        assert n == max_clicks or o["ious"][-1] >= 0.95
        g, ig = rec.objects[0].mask(), rec.objects[0].ignore()
        for k, (pts, labs, _, mask, _) in enumerate(calls):
            assert len(pts) == k + 1  # all clicks so far, in order, the new one last
            so_far = o["clicks"][: k + 1]
            assert pts.tolist() == [c[:2] for c in so_far] and labs.tolist() == [c[2] for c in so_far]
            assert mask.shape == g.shape and mask.dtype == bool
            assert mask_iou(mask, g, ig) == pytest.approx(o["ious"][k])


def test_sam_decoder_rules(sam, grabcut):
    records = grabcut[1:3]
    runs = {}
    for feed in (True, False):
        cm = Recording(sam, feed_logits=feed)
        res = ck.evaluate_clicks(cm, records, max_clicks=6)
        _check_structure(res, cm, records, 6)
        assert res["rules"]["feed_logits"] is feed and res["rules"]["later_clicks"] == "single-mask output"
        runs[feed] = (cm, res)
    assert Recording(sam).feed_logits is True  # on by default for a model with a mask prompt
    # Replay object 0 with the public predictor: click 1 multimask + best IoU, later clicks single-mask,
    # the previous chosen low-res logits as mask_input when feeding.
    pred = es.SamPredictor(sam)
    pred.set_image(records[0].image())
    for feed, (cm, res) in runs.items():
        calls = _per_object_calls(cm, res)[0]
        for k, (pts, labs, prev, mask, logits) in enumerate(calls):
            mi = calls[k - 1][4].numpy() if feed and k else None
            m, s, low = pred.predict(pts, labs, mask_input=mi, multimask_output=k == 0, return_logits=True)
            best = int(np.argmax(s))
            assert logits.shape == (1, 64, 64)
            torch.testing.assert_close(logits[0], torch.from_numpy(low[best]), atol=1e-4, rtol=1e-4)
            assert (mask == (m[best] > ck.LOGIT_THRESHOLD)).mean() > 0.999  # probability > 0.49
            assert (prev is None) == (k == 0)
    on, off = (_per_object_calls(runs[f][0], runs[f][1]) for f in (True, False))
    torch.testing.assert_close(on[0][0][4], off[0][0][4])  # click 1: no mask input either way
    assert any(not torch.allclose(a[4], b[4]) for a, b in zip(on[0][1:], off[0][1:]))  # feeding changes the result


def test_efficient_sam_decoder_takes_the_last_6_clicks(esam, grabcut):
    records = grabcut[1:3]
    with pytest.raises(ValueError, match="mask prompt"):
        ck.SamClickModel(esam, feed_logits=True)
    cm = Recording(esam)
    res = ck.evaluate_clicks(cm, records, max_clicks=8)
    _check_structure(res, cm, records, 8)
    rules = res["rules"]
    assert rules["feed_logits"] is False and rules["max_points"] == 6
    assert rules["beyond_max_points"] == "the last 6 clicks"
    assert rules["first_click"] == rules["later_clicks"] == "most confident of 3 masks"
    calls = _per_object_calls(cm, res)[0]
    assert len(calls) == 8  # random weights never reach IoU 0.95
    pred = es.SamPredictor(esam)
    pred.set_image(records[0].image())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # negative clicks: EfficientSAM's label-0 warning
        for k, (pts, labs, _, mask, logits) in enumerate(calls):
            m, s, low = pred.predict(pts[-6:], labs[-6:], multimask_output=True, return_logits=True)
            best = int(np.argmax(s))
            torch.testing.assert_close(logits[0], torch.from_numpy(low[best]), atol=1e-4, rtol=1e-4)
            assert (mask == (m[best] > ck.LOGIT_THRESHOLD)).mean() > 0.999
            if k >= 6:  # not the first 6 (what the prompt encoder would keep if given all)
                _, s6, low6 = pred.predict(pts[:6], labs[:6], multimask_output=True)
                assert not np.allclose(low6[int(np.argmax(s6))], low[best], atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Readers of the published layouts, built from the bundled GrabCut files


def _boundary_gt(rec):
    g, ig = rec.objects[0].mask(), rec.objects[0].ignore()
    v = np.where(g, 255, 0).astype(np.uint8)
    if ig is not None:
        v[ig] = 128
    return v


def _expected(rec):
    g, ig = rec.objects[0].mask(), rec.objects[0].ignore()
    ig = np.zeros_like(g) if ig is None else ig
    return g & ~ig, ig


@pytest.fixture
def boundary_root(tmp_path, grabcut):
    root = tmp_path / "GrabCut"
    (root / "data_GT").mkdir(parents=True)
    (root / "boundary_GT").mkdir()
    recs = grabcut[:3]
    for rec in recs:
        stem = rec.image_id.removeprefix("grabcut_")
        shutil.copy(rec.path, root / "data_GT" / f"{stem}.jpg")
        Image.fromarray(_boundary_gt(rec)).save(root / "boundary_GT" / f"{stem}.bmp")
    return root, recs


def test_grabcut_berkeley_boundary_gt(boundary_root):
    root, recs = boundary_root
    assert detect_interactive_layout(root) == "boundary_gt"
    for layout in (None, "grabcut", "berkeley"):
        out = open_interactive_dataset(root, layout)
        assert [r.image_id for r in out] == sorted(r.image_id.removeprefix("grabcut_") for r in recs)
    by_id = {r.image_id: r for r in out}
    for rec in recs:
        o = by_id[rec.image_id.removeprefix("grabcut_")].objects[0]
        g, ig = _expected(rec)
        assert (o.mask() == g).all() and (o.ignore() == ig).all()
    assert ck.evaluate_clicks("oracle:gt", out, max_clicks=3)["noc"]["95"] == 1.0


def test_boundary_gt_bad_inputs(boundary_root):
    root, recs = boundary_root
    bad = root / "boundary_GT" / f"{recs[0].image_id.removeprefix('grabcut_')}.bmp"
    v = _boundary_gt(recs[0])
    v[0, :3] = 7
    Image.fromarray(v).save(bad)
    obj = next(r for r in open_interactive_dataset(root) if bad.stem == r.image_id).objects[0]
    with pytest.raises(DatasetError, match=rf"{bad}.*7.*128 \(ignore band\)"):
        obj.mask()
    Image.fromarray(v[:-5]).save(bad)  # another size than its image
    with pytest.raises(DatasetError, match=rf"{bad} is 316x481 \(HxW\), its image .*321x481"):
        obj.mask()
    bad.unlink()  # an image without its mask
    with pytest.raises(DatasetError, match=rf"image .*{bad.stem}.jpg has no mask in .*boundary_GT"):
        open_interactive_dataset(root)


def test_davis_layout(tmp_path, grabcut):
    root = tmp_path / "DAVIS"
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    recs = grabcut[3:5]
    for i, rec in enumerate(recs):
        shutil.copy(rec.path, root / "img" / f"{rec.image_id}.jpg")
        g = np.where(rec.objects[0].mask(), 255, 0).astype(np.uint8)
        Image.fromarray(np.dstack([g] * 3) if i else g).save(root / "gt" / f"{rec.image_id}.png")  # RGB and L
    out = open_interactive_dataset(root)
    assert detect_interactive_layout(root) == "davis" and len(out) == 2
    for rec, r in zip(recs, out):
        assert r.image_id == rec.image_id and (r.objects[0].mask() == rec.objects[0].mask()).all()
        assert r.objects[0].ignore() is None and r.image().shape == rec.image().shape


def test_pascal_voc_layout(tmp_path, grabcut):
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationObject", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    recs = [r for r in grabcut if r.objects[0].ignore() is not None][:2]
    for i, rec in enumerate(recs):
        shutil.copy(rec.path, root / "JPEGImages" / f"{rec.image_id}.jpg")
        g, ig = _expected(rec)
        idx = np.zeros(g.shape, np.uint8)
        idx[g] = 1
        if i:  # two instances: the object's left and right halves
            half = np.zeros_like(g)
            half[:, g.shape[1] // 2 :] = True
            idx[g & half] = 2
        idx[ig] = 255
        im = Image.fromarray(idx)  # putpalette makes it a palette ("P") image of these indices
        im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 252) + [224, 224, 192])
        im.save(root / "SegmentationObject" / f"{rec.image_id}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(f"{r.image_id}\n" for r in recs))
    out = open_interactive_dataset(root)
    assert detect_interactive_layout(root) == "voc"
    assert [[o.object_id for o in r.objects] for r in out] == [
        [f"{recs[0].image_id}_1"], [f"{recs[1].image_id}_1", f"{recs[1].image_id}_2"]]
    g, ig = _expected(recs[1])
    left, right = out[1].objects
    assert (left.mask() | right.mask() == g).all() and not (left.mask() & right.mask()).any()
    assert (left.ignore() == ig).all() and (right.ignore() == ig).all()
    res = ck.evaluate_clicks("oracle:gt", out, max_clicks=2)
    assert res["n"] == 3 and res["noc"]["95"] == 1.0
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000000\n")
    with pytest.raises(DatasetError, match=r"JPEGImages/2007_000000.jpg does not exist \(listed in .*val.txt\)"):
        open_interactive_dataset(root)
    (root / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(DatasetError, match="val.txt does not exist"):
        open_interactive_dataset(root)


def test_sbd_layout(tmp_path, grabcut):
    root = tmp_path / "SBD"
    (root / "img").mkdir(parents=True)
    (root / "inst").mkdir()
    rec = grabcut[0]
    shutil.copy(rec.path, root / "img" / f"{rec.image_id}.jpg")
    (root / "val.txt").write_text(f"{rec.image_id}\n")
    seg = rec.objects[0].mask().astype(np.uint8) * 3
    try:
        from scipy.io import savemat
    except ImportError:  # scipy is not a dependency: a clear error, and no .mat to write
        (root / "inst" / f"{rec.image_id}.mat").write_bytes(b"MATLAB 5.0 MAT-file")
        with pytest.raises(ImportError, match=r"SBD's instance maps .* needs scipy: pip install scipy"):
            open_interactive_dataset(root)
        return
    savemat(root / "inst" / f"{rec.image_id}.mat", {"GTinst": {"Segmentation": seg}})
    out = open_interactive_dataset(root)
    assert [o.object_id for o in out[0].objects] == [f"{rec.image_id}_3"]
    assert (out[0].objects[0].mask() == rec.objects[0].mask()).all()


def test_other_layouts_fall_back_to_open_dataset(asset_paths, tmp_path):
    out = open_interactive_dataset(asset_paths.grabcut)
    ref = open_dataset(asset_paths.grabcut)
    assert detect_interactive_layout(asset_paths.grabcut) is None
    assert [r.image_id for r in out] == [r.image_id for r in ref] and len(out) == 50
    with pytest.raises(ValueError, match="unknown layout 'davsi'"):
        open_interactive_dataset(asset_paths.grabcut, "davsi")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_interactive_dataset(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------------
# benchmarks/eval_clicks.py


def test_eval_clicks_options_run_and_plot(tmp_path, with_ignore, capsys):
    p = argparse.ArgumentParser()
    eval_clicks.add_arguments(p)
    a = p.parse_args([])
    assert a.max_clicks == 20 and a.thresholds == [0.85, 0.90, 0.95] and a.feed_logits is None and a.plot is None
    assert p.parse_args(["--no-feed-logits"]).feed_logits is False and p.parse_args(["--feed-logits"]).feed_logits
    for bad in (["--max-clicks", "0"], ["--thresholds", "1.2"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    capsys.readouterr()
    a = p.parse_args(["--max-clicks", "4", "--thresholds", "0.9", "0.8"])
    a.json, a.model, a.no_progress = str(tmp_path / "gt.json"), "oracle:gt", True
    res = eval_clicks.run(a, "oracle:gt", with_ignore)
    assert res["noc"] == {"80": 1.0, "90": 1.0} and res["plot"] == str(tmp_path / "gt.png")
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps({**res, "model": "oracle:gt"}))
    a.json, a.model, a.plot = None, "oracle:empty", str(tmp_path / "empty.png")
    res = eval_clicks.run(a, "oracle:empty", with_ignore)
    (tmp_path / "empty.json").write_text(json.dumps({**res, "model": "oracle:empty"}))
    assert eval_clicks.main([str(gt_json), str(tmp_path / "empty.json"), "--out", str(tmp_path / "both.png")]) == 0
    for name, colours in (("gt.png", 1), ("empty.png", 1), ("both.png", 2)):
        im = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert im.shape == (600, 900, 3)
        for c in eval_clicks.COLORS[:colours]:
            assert (im == c).all(-1).sum() > 100  # the line is drawn
        assert not (im == eval_clicks.COLORS[colours]).all(-1).any()  # one line per model
    # The lines sit where the values are: mIoU 1 at the top of the frame, 0 at the bottom.
    im = np.asarray(Image.open(tmp_path / "both.png").convert("RGB"))
    rows = lambda c: np.flatnonzero((im == c).all(-1).any(1))  # noqa: E731
    assert math.isclose(np.median(rows(eval_clicks.COLORS[0])), 50, abs_tol=4)
    assert math.isclose(np.median(rows(eval_clicks.COLORS[1])), 540, abs_tol=4)
    with pytest.raises(SystemExit, match="not a click-protocol results JSON"):
        eval_clicks.main([str(tmp_path / "gt.png"), "--out", str(tmp_path / "x.png")])


def test_esam_eval_protocol_clicks_cli(tmp_path, asset_paths, capsys):
    """`esam-eval --protocol clicks` on the bundled GrabCut folder: the oracles' NoC, a tiny random SAM
    end to end (JSON, plot, rules), and options that belong to the protocol rejected elsewhere."""
    from benchmarks import evaluate as ev

    data = str(asset_paths.grabcut)
    out = tmp_path / "empty.json"
    assert ev.main(["--protocol", "clicks", "--model", "oracle:empty", "--data", data, "--limit", "2",
                    "--max-clicks", "3", "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"] == "clicks" and res["n"] == 2 and res["noc"] == {"85": 3, "90": 3, "95": 3}
    assert res["nof"]["90"] == 2 and (tmp_path / "empty.png").is_file()
    capsys.readouterr()
    assert ev.main(["--protocol", "clicks", "--model", "oracle:gt", "--data", data, "--limit", "2",
                    "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["noc"]["95"] == 1
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "sam.json"
    assert ev.main(["--protocol", "clicks", "--model", "sam_vit_b", *sets, "--data", data, "--limit", "1",
                    "--max-clicks", "4", "--json", str(out), "--plot", str(tmp_path / "p.png"), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["rules"]["feed_logits"] is True and len(res["miou_at_clicks"]) == 4
    assert 1 <= res["noc"]["90"] <= 4 and (tmp_path / "p.png").is_file()
    with pytest.raises(SystemExit):
        ev.main(["--model", "oracle:gt", "--data", data, "--feed-logits"])
    with pytest.raises(SystemExit, match="oracle:box"):
        ev.main(["--protocol", "clicks", "--model", "oracle:box", "--data", data, "--no-progress"])
