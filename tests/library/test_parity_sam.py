"""Parity with the official `segment_anything` package on identical random weights.

The official model is randomised with a fixed seed (`randomize_`) and its state dict is copied into
ours; both run in eval mode and float32 on real photos. Covered: `sam_vit_b` at full size (the
registered config, no overrides) and small ViT-L- / ViT-H-like encoders (built from the `sam_vit_l` /
`sam_vit_h` registry entries with overrides, and on the official side exactly like `_build_sam` does)
at the real 1024 input, so windowing with padding (64 -> 70), global blocks and rel-pos are exercised.

Every image is encoded once per model and implementation (module-scoped cache): the full ViT-B
encoder costs 15-25 s per image on a 2-core CPU, so it runs on one photo.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from segment_anything import SamPredictor as OfficialPredictor
from segment_anything import sam_model_registry

import efficient_sam as es
from helpers import GRABCUT, PHOTOS, load_rgb, randomize_, rel_err
from official_sam import build_official_sam

TOL = 1e-4  # rel_err of embeddings, low-res logits and IoU predictions
MASK_TOL = 1e-4  # pixels whose official logit is this close to the threshold may flip

# name -> (our registry name, overrides or None for the full registered config, official encoder kwargs, seed)
VARIANTS = {
    "vit_b": ("sam_vit_b", None, None, 0),
    "vit_l_small": (
        "sam_vit_l",
        dict(encoder_embed_dim=64, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3)),
        dict(embed_dim=64, depth=4, num_heads=4, global_attn_indexes=(1, 3)),
        1,
    ),
    # head_dim 24, not a power of two (like ViT-H's 80)
    "vit_h_small": (
        "sam_vit_h",
        dict(encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3)),
        dict(embed_dim=96, depth=4, num_heads=4, global_attn_indexes=(1, 3)),
        2,
    ),
}


def _sheep_box() -> np.ndarray:
    with open(GRABCUT / "pairs.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["name"] == "grabcut_sheep")
    return np.array([float(v) for v in row["bbox_xyxy"].split()])


_SHEEP = _sheep_box()  # 181 180 299 376 in a 450x600 (portrait) image
_SC = np.array([(_SHEEP[0] + _SHEEP[2]) / 2, (_SHEEP[1] + _SHEEP[3]) / 2])

# image -> (path, {prompt name: predict kwargs}) in original-image pixels
IMAGES = {
    # landscape 1800x1200: the 1024 input is padded at the bottom
    "truck": (
        PHOTOS / "truck.jpg",
        {
            # the SAM notebook prompts
            "point": dict(point_coords=np.array([[500.0, 375.0]]), point_labels=np.array([1])),
            "box_neg": dict(
                point_coords=np.array([[575.0, 750.0]]), point_labels=np.array([0]),
                box=np.array([425.0, 600.0, 700.0, 875.0]),
            ),
            "multi_point": dict(
                point_coords=np.array([[500.0, 375.0], [1125.0, 625.0], [1400.0, 300.0], [300.0, 1000.0]]),
                point_labels=np.array([1, 1, 1, 0]),
            ),
            # the notebook passes a single box as input_box[None, :]
            "box_only": dict(box=np.array([[425.0, 600.0, 700.0, 875.0]])),
        },
    ),
    # portrait 450x600 grabcut photo: the 1024 input is padded on the right
    "sheep": (
        GRABCUT / "images" / "grabcut_sheep.jpg",
        {
            "point": dict(point_coords=_SC[None], point_labels=np.array([1])),
            "box_neg": dict(
                point_coords=np.array([[_SHEEP[0] - 30, _SC[1]]]), point_labels=np.array([0]), box=_SHEEP
            ),
            "multi_point": dict(
                point_coords=np.array([_SC, [216.0, 249.0], [264.0, 307.0], [400.0, 100.0]]),
                point_labels=np.array([1, 1, 1, 0]),
            ),
            "box_only": dict(box=_SHEEP),
        },
    ),
}

# One image per model, to keep this module at 1-1.5 min on a 2-core CPU: full ViT-B (15-25 s per image
# and implementation) on the truck photo (landscape: padded at the bottom), the small ViT-L-like encoder on
# the grabcut photo (portrait: padded on the right), the small ViT-H-like one on the truck photo again.
CASES = [("vit_b", "truck"), ("vit_l_small", "sheep"), ("vit_h_small", "truck")]
CASE_IDS = [f"{v}-{i}" for v, i in CASES]


@pytest.fixture(scope="module")
def cache():
    """Models and encoded predictors, built lazily and shared by all tests of this module."""
    return {}


def _models(cache, variant):
    if variant not in cache:
        name, overrides, official_kwargs, seed = VARIANTS[variant]
        if overrides is None:
            official = sam_model_registry[name.removeprefix("sam_")]()
            ours = es.build_model(name)
        else:
            official = build_official_sam(**official_kwargs)
            ours = es.build_model(name, **overrides)
        randomize_(official, seed=seed)
        official.eval()
        ours.load_state_dict(official.state_dict())  # strict: same key layout
        cache[variant] = (official, ours.eval())
    return cache[variant]


@dataclass
class Pair:
    variant: str
    image: str
    po: OfficialPredictor  # official, image set
    pu: es.SamPredictor  # ours, same image set

    @property
    def prompts(self) -> dict:
        return IMAGES[self.image][1]


@pytest.fixture
def pair(request, cache) -> Pair:
    """Official and our predictor with the case's image set (each image encoded once per model)."""
    variant, image = request.param
    key = (variant, image)
    if key not in cache:
        official, ours = _models(cache, variant)
        img = load_rgb(IMAGES[image][0])
        po, pu = OfficialPredictor(official), es.SamPredictor(ours)
        po.set_image(img)
        pu.set_image(img)
        cache[key] = Pair(variant, image, po, pu)
    return cache[key]


def assert_masks_match(ours: np.ndarray | torch.Tensor, official_logits: np.ndarray | torch.Tensor) -> None:
    """Our boolean masks equal official logits > 0, except where the official logit is within MASK_TOL of 0."""
    ours = ours.cpu().numpy() if isinstance(ours, torch.Tensor) else ours
    logits = official_logits.cpu().numpy() if isinstance(official_logits, torch.Tensor) else official_logits
    assert ours.dtype == np.bool_, ours.dtype
    assert ours.shape == logits.shape, (ours.shape, logits.shape)
    bad = (ours != (logits > 0.0)) & (np.abs(logits) > MASK_TOL)
    assert not bad.any(), f"{int(bad.sum())} of {bad.size} mask pixels differ away from the threshold"


def assert_outputs_match(ours, official) -> None:
    """ours = (bool masks, iou, low-res); official = (logit masks, iou, low-res) from return_logits=True."""
    masks, iou, low = ours
    o_logits, o_iou, o_low = official
    assert tuple(low.shape) == tuple(o_low.shape) and tuple(iou.shape) == tuple(o_iou.shape)
    assert rel_err(low, o_low) <= TOL
    assert rel_err(iou, o_iou) <= TOL
    assert_masks_match(masks, o_logits)


pair_cases = pytest.mark.parametrize("pair", CASES, ids=CASE_IDS, indirect=True)
multimask_cases = pytest.mark.parametrize("multimask", [True, False], ids=["multi", "single"])


@pair_cases
def test_image_embedding(pair):
    emb, o_emb = pair.pu.get_image_embedding(), pair.po.get_image_embedding()
    assert emb.shape == o_emb.shape == (1, 256, 64, 64)
    assert emb.dtype == torch.float32
    assert rel_err(emb, o_emb) <= TOL
    assert pair.pu.original_size == pair.po.original_size
    assert tuple(pair.pu.input_size) == tuple(pair.po.input_size)


@pair_cases
@multimask_cases
@pytest.mark.parametrize("prompt", ["point", "box_neg", "multi_point", "box_only"])
def test_predict(pair, prompt, multimask):
    kwargs = pair.prompts[prompt]
    official = pair.po.predict(**kwargs, multimask_output=multimask, return_logits=True)
    ours = pair.pu.predict(**kwargs, multimask_output=multimask)
    n = 3 if multimask else 1
    assert ours[0].shape == (n, *pair.po.original_size) and ours[0].dtype == np.bool_
    assert ours[1].shape == (n,) and ours[2].shape == (n, 256, 256)
    assert_outputs_match(ours, official)
    if prompt == "point":  # return_logits: our full-resolution logits agree with the official ones
        logits = pair.pu.predict(**kwargs, multimask_output=multimask, return_logits=True)[0]
        assert logits.dtype == np.float32
        assert rel_err(logits, official[0]) <= TOL


@pair_cases
def test_predict_mask_feedback(pair):
    """The notebook's refinement step: the best low-res logits of a first call fed back as mask_input
    with the points (single mask, as in the notebook), and on their own (a mask-only prompt has no
    sparse tokens at all)."""
    first = pair.prompts["multi_point"]
    _, o_iou, o_low = pair.po.predict(**first, multimask_output=True)
    mask_input = o_low[np.argmax(o_iou)][None]  # (1, 256, 256) logits
    for kwargs, multimask in ((dict(first, mask_input=mask_input), False), (dict(mask_input=mask_input), True)):
        official = pair.po.predict(**kwargs, multimask_output=multimask, return_logits=True)
        ours = pair.pu.predict(**kwargs, multimask_output=multimask)
        assert_outputs_match(ours, official)


def _batched_prompts(pair) -> dict:
    """Batched prompts in original-image pixels: several boxes (B, 4) and point sets (B, N, 2)."""
    h, w = pair.po.original_size
    if pair.image == "truck":  # the notebook's batched boxes
        boxes = [[75, 275, 1725, 850], [425, 600, 700, 875], [1375, 550, 1650, 800], [1240, 675, 1400, 750]]
    else:
        x0, y0, x1, y1 = _SHEEP
        boxes = [[x0, y0, x1, y1], [x0 - 40, y0 - 40, x1 + 40, y1 + 40], [x0, y0, (x0 + x1) / 2, y1], [0, 0, w, h]]
    boxes = torch.tensor(boxes, dtype=torch.float32)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    corners = boxes[:, :2] + 0.25 * (boxes[:, 2:] - boxes[:, :2])
    outside = torch.tensor([[w - 5.0, h - 5.0]]).expand(len(boxes), 2)
    coords = torch.stack([centres, corners, outside], dim=1)  # (B, 3, 2)
    labels = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, -1, -1]])  # last one padded with label -1
    return dict(boxes=boxes, coords=coords, labels=labels)


def _official_torch(pair, coords=None, labels=None, boxes=None, mask_input=None, multimask=True):
    po = pair.po
    if coords is not None:
        coords = po.transform.apply_coords_torch(coords, po.original_size)
    if boxes is not None:
        boxes = po.transform.apply_boxes_torch(boxes, po.original_size)
    return po.predict_torch(coords, labels, boxes, mask_input, multimask_output=multimask, return_logits=True)


@pair_cases
@pytest.mark.parametrize(
    "what, multimask",
    [("boxes", True), ("points", False), ("points+boxes", True), ("points+masks", False)],
)
def test_predict_torch_batched(pair, what, multimask):
    """Several prompts in one call. Our predict_torch takes original-image pixels; the official one gets
    them transformed with its own ResizeLongestSide."""
    p = _batched_prompts(pair)
    b = len(p["boxes"])
    if what == "boxes":
        kw = dict(boxes=p["boxes"])
    elif what == "points":
        kw = dict(coords=p["coords"], labels=p["labels"])
    elif what == "points+boxes":
        kw = dict(coords=p["coords"][:, :1], labels=p["labels"][:, :1], boxes=p["boxes"])
    else:  # a batch of mask prompts (B, 1, 256, 256) fed back from the box call, with the point sets
        _, o_iou, o_low = _official_torch(pair, boxes=p["boxes"], multimask=True)
        masks = o_low[torch.arange(b), o_iou.argmax(dim=1)][:, None]
        kw = dict(coords=p["coords"], labels=p["labels"], mask_input=masks)
    official = _official_torch(pair, **kw, multimask=multimask)
    ours = pair.pu.predict_torch(
        kw.get("coords"), kw.get("labels"), kw.get("boxes"), kw.get("mask_input"), multimask_output=multimask
    )
    n = 3 if multimask else 1
    assert ours[0].shape == (b, n, *pair.po.original_size) and ours[0].dtype == torch.bool
    assert ours[1].shape == (b, n) and ours[2].shape == (b, n, 256, 256)
    assert_outputs_match(ours, official)


@pytest.mark.parametrize("pair", [("vit_h_small", "truck")], ids=["vit_h_small-truck"], indirect=True)
def test_predict_equals_predict_torch(pair):
    """predict and predict_torch take the same original-pixel coordinates and agree."""
    kw = pair.prompts["box_neg"]
    masks, iou, low = pair.pu.predict(**kw, multimask_output=True)
    t_masks, t_iou, t_low = pair.pu.predict_torch(
        torch.as_tensor(kw["point_coords"])[None], torch.as_tensor(kw["point_labels"])[None],
        torch.as_tensor(kw["box"])[None], multimask_output=True,
    )
    assert np.array_equal(masks, t_masks[0].numpy())
    assert rel_err(t_iou[0], iou) <= 1e-6 and rel_err(t_low[0], low) <= 1e-6
