"""Parity with the official EfficientSAM code through the compact random-weight fixture.

`assets/fixtures/efficient_sam_vitt_compact/` (see its README): `weights_spec.json` regenerates an
official-layout ViT-Ti state dict with random values (`make_weights.py`, the `efficient_sam_vitt_sd` and
`efficient_sam_vitt_checkpoint` fixtures); `io.npz` holds what the official code produced from it on 2
real images (GrabCut teddy, EfficientSAM's dogs) with 4 queries each (padded to 3 points with (-1, -1) /
label -1): the embedding, the low-res logits and (teddy) the full-res logits on every 4th pixel, the IoU
predictions in full, and statistics of the full embedding and low-res logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import efficient_sam as es
from efficient_sam import checkpoint as ckpt
from helpers import rel_err

TOL = 1e-4
IMAGES = [0, 1]  # grabcut_teddy.jpg (398 x 284), dogs.jpg (603 x 1072)


def sub4(x):
    """Every 4th pixel of the last two dims, as stored in io.npz."""
    return x[..., ::4, ::4]


@pytest.fixture(scope="module")
def io(efficient_sam_vitt_io):
    return efficient_sam_vitt_io


@pytest.fixture(scope="module")
def official_sd(efficient_sam_vitt_sd):
    return efficient_sam_vitt_sd


@pytest.fixture(scope="module")
def model(efficient_sam_vitt_checkpoint):
    return es.build_model("efficient_sam_vitt", checkpoint=efficient_sam_vitt_checkpoint)


@pytest.fixture(scope="module")
def predictors(model, io):
    """One predictor per fixture image, each image encoded once."""
    out = []
    for i in range(len(io["names"])):
        p = es.SamPredictor(model)
        p.set_image(io[f"image_{i}"])
        out.append(p)
    return out


def test_fixture_images_are_the_ones_used(io):
    """The images come from assets/ (io.npz does not store them): names and sizes as in the fixture's README."""
    assert io["names"].tolist() == ["grabcut_teddy.jpg", "dogs.jpg"]
    assert [io[f"image_{i}"].shape for i in IMAGES] == [(398, 284, 3), (603, 1072, 3)]
    assert all(io[f"image_{i}"].dtype == np.uint8 for i in IMAGES)


@pytest.mark.parametrize("i", IMAGES)
def test_embedding(predictors, io, i):
    emb = predictors[i].get_image_embedding()
    assert emb.shape == (1, 256, 64, 64) and emb.dtype == torch.float32
    assert rel_err(sub4(emb[0]), io[f"embedding_sub4_{i}"]) <= TOL
    # the stored statistic of the whole embedding (not only the subsampled pixels)
    assert rel_err(emb.std(), io[f"stats_{i}"][0]) <= TOL


@pytest.mark.parametrize("i", IMAGES)
def test_predict_torch(predictors, io, i):
    points = torch.from_numpy(io[f"points_{i}"])  # (4, 3, 2), original-image pixels
    labels = torch.from_numpy(io[f"labels_{i}"])  # (4, 3) float, -1 padding; query 1 has a negative point
    assert (labels == 0).any()
    with pytest.warns(UserWarning, match="negative points"):
        logits, iou, low = predictors[i].predict_torch(points, labels, multimask_output=True, return_logits=True)
    h, w = io[f"image_{i}"].shape[:2]
    assert logits.shape == (4, 3, h, w) and logits.dtype == torch.float32
    assert low.shape == (4, 3, 256, 256)
    assert rel_err(sub4(low), io[f"lowres_logits_sub4_{i}"]) <= TOL
    assert rel_err(iou, io[f"iou_{i}"]) <= TOL
    # std and max |.| of the full low-res logits
    assert rel_err(low.std(), io[f"stats_{i}"][1]) <= TOL
    assert rel_err(low.abs().max(), io[f"stats_{i}"][2]) <= TOL
    if i == 0:  # full-resolution logits are stored for the smallest image only
        assert rel_err(sub4(logits), io["fullres_logits_sub4_0"]) <= TOL
    # int64 labels give the same result
    with pytest.warns(UserWarning):
        _, iou_int, low_int = predictors[i].predict_torch(points, labels.long(), multimask_output=True)
    assert torch.equal(low_int, low) and torch.equal(iou_int, iou)


@pytest.mark.parametrize("i", IMAGES)
def test_box_argument_equals_corner_points(predictors, io, i):
    """Query 2 is the box as points labelled 2/3; `boxes=` must give the same outputs (also via predict)."""
    corners = io[f"points_{i}"][2, :2]
    assert io[f"labels_{i}"][2].tolist() == [2, 3, -1]
    box = torch.from_numpy(corners.reshape(1, 4))
    _, iou, low = predictors[i].predict_torch(None, None, box, multimask_output=True)
    assert rel_err(sub4(low[0]), io[f"lowres_logits_sub4_{i}"][2]) <= TOL
    assert rel_err(iou[0], io[f"iou_{i}"][2]) <= TOL
    masks, iou_np, low_np = predictors[i].predict(box=corners.reshape(4), multimask_output=True)
    assert masks.dtype == np.bool_ and masks.shape == (3, *io[f"image_{i}"].shape[:2])
    assert rel_err(sub4(low_np), io[f"lowres_logits_sub4_{i}"][2]) <= TOL
    assert rel_err(iou_np, io[f"iou_{i}"][2]) <= TOL


def test_predict_single_query_matches(predictors, io):
    """`predict` (numpy, one prompt, no padding points) reproduces query 3 (three positives) of the dogs image."""
    i = 1
    pts, lab = io[f"points_{i}"][3], io[f"labels_{i}"][3]
    assert (lab == 1).all()
    masks, iou, low = predictors[i].predict(pts, lab.astype(np.int64), multimask_output=True)
    assert rel_err(sub4(low), io[f"lowres_logits_sub4_{i}"][3]) <= TOL
    assert rel_err(iou, io[f"iou_{i}"][3]) <= TOL
    full = predictors[i].predict(pts, lab, multimask_output=True, return_logits=True)[0]
    assert np.array_equal(masks, full > 0.0)


def test_state_dict_round_trip(model, official_sd):
    """Our state dict converted back to the official layout is exactly the fixture's weights."""
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
