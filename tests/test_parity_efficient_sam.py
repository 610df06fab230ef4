"""Parity with the official EfficientSAM code through the shared random-weight fixture.

`../shared/fixtures/efficient_sam_vitt_random/`: `weights.safetensors` is an official-layout ViT-Ti state
dict with random values, `io.npz` holds what the official code produced from it on 4 real images with
4 queries each (padded to 3 points with (-1, -1) / label -1), see the README there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import efficient_sam as es
from efficient_sam import checkpoint as ckpt
from helpers import FIXTURES, rel_err

FIXTURE = FIXTURES / "efficient_sam_vitt_random"
WEIGHTS = FIXTURE / "weights.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def io():
    with np.load(FIXTURE / "io.npz") as d:  # no pickle needed
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def official_sd():
    return load_file(str(WEIGHTS))


@pytest.fixture(scope="module")
def model():
    return es.build_model("efficient_sam_vitt", checkpoint=WEIGHTS)


@pytest.fixture(scope="module")
def predictors(model, io):
    """One predictor per fixture image, each image encoded once."""
    out = []
    for i in range(len(io["names"])):
        p = es.SamPredictor(model)
        p.set_image(io[f"image_{i}"])
        out.append(p)
    return out


IMAGES = range(4)


@pytest.mark.parametrize("i", IMAGES)
def test_embedding(predictors, io, i):
    emb = predictors[i].get_image_embedding()
    assert emb.shape == (1, 256, 64, 64) and emb.dtype == torch.float32
    assert rel_err(emb[0], io[f"embedding_{i}"]) <= TOL


@pytest.mark.parametrize("i", IMAGES)
def test_predict_torch(predictors, io, i):
    points = torch.from_numpy(io[f"points_{i}"])  # (4, 3, 2), original-image pixels
    labels = torch.from_numpy(io[f"labels_{i}"])  # (4, 3) float, -1 padding; query 1 has a negative point
    assert (labels == 0).any()
    with pytest.warns(UserWarning, match="negative points"):
        logits, iou, low = predictors[i].predict_torch(points, labels, multimask_output=True, return_logits=True)
    h, w = io[f"image_{i}"].shape[:2]
    assert logits.shape == (4, 3, h, w) and logits.dtype == torch.float32
    assert rel_err(low, io[f"lowres_logits_{i}"]) <= TOL
    assert rel_err(iou, io[f"iou_{i}"]) <= TOL
    if i == 0:  # full-resolution logits are stored for the smallest image only
        assert rel_err(logits, io["fullres_logits_0"]) <= TOL
    # int64 labels give the same result
    with pytest.warns(UserWarning):
        _, iou_int, low_int = predictors[i].predict_torch(points, labels.long(), multimask_output=True)
    assert torch.equal(low_int, low) and torch.equal(iou_int, iou)


@pytest.mark.parametrize("i", [0, 3])
def test_box_argument_equals_corner_points(predictors, io, i):
    """Query 2 is the box as points labelled 2/3; `boxes=` must give the same outputs (also via predict)."""
    corners = io[f"points_{i}"][2, :2]
    assert io[f"labels_{i}"][2].tolist() == [2, 3, -1]
    box = torch.from_numpy(corners.reshape(1, 4))
    _, iou, low = predictors[i].predict_torch(None, None, box, multimask_output=True)
    assert rel_err(low[0], io[f"lowres_logits_{i}"][2]) <= TOL
    assert rel_err(iou[0], io[f"iou_{i}"][2]) <= TOL
    masks, iou_np, low_np = predictors[i].predict(box=corners.reshape(4), multimask_output=True)
    assert masks.dtype == np.bool_ and masks.shape == (3, *io[f"image_{i}"].shape[:2])
    assert rel_err(low_np, io[f"lowres_logits_{i}"][2]) <= TOL
    assert rel_err(iou_np, io[f"iou_{i}"][2]) <= TOL


def test_predict_single_query_matches(predictors, io):
    """`predict` (numpy, one prompt, no padding points) reproduces query 3 of the banana image."""
    i = 2
    pts, lab = io[f"points_{i}"][3], io[f"labels_{i}"][3]
    assert (lab == 1).all()
    masks, iou, low = predictors[i].predict(pts, lab.astype(np.int64), multimask_output=True)
    assert rel_err(low, io[f"lowres_logits_{i}"][3]) <= TOL
    assert rel_err(iou, io[f"iou_{i}"][3]) <= TOL
    full = predictors[i].predict(pts, lab, multimask_output=True, return_logits=True)[0]
    assert np.array_equal(masks, full > 0.0)


def test_state_dict_round_trip(model, official_sd):
    """Our state dict converted back to the official layout is exactly the fixture file."""
    back = ckpt.to_efficient_sam_layout(model.state_dict())
    assert set(back) == set(official_sd)
    assert len(back) == 278
    for k, v in official_sd.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    # and the two renamings are inverse to each other on both layouts
    assert ckpt.to_efficient_sam_layout(ckpt.from_efficient_sam_layout(official_sd)).keys() == official_sd.keys()
    ours = model.state_dict()
    assert ckpt.from_efficient_sam_layout(back).keys() == ours.keys()
    assert ckpt.detect_format(official_sd) == "efficient_sam"
    assert ckpt.detect_format(ours) == "sam"
