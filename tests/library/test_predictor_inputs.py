"""`SamPredictor` input handling: clear errors for bad input, and the conversions it promises
(RGBA, grayscale, BGR), on small random models of both families (fast: one encoder block)."""

from __future__ import annotations

import contextlib
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import efficient_sam as es
from helpers import load_rgb, randomize_

SMALL = dict(encoder_depth=1, encoder_embed_dim=32, encoder_num_heads=1)


@pytest.fixture(scope="module")
def sam_model():
    return randomize_(es.build_model("sam_vit_b", encoder_global_attn_indexes=(0,), **SMALL), seed=5).eval()


@pytest.fixture(scope="module")
def esam_model():
    return randomize_(es.build_model("efficient_sam_vitt", **SMALL), seed=6).eval()


@pytest.fixture(scope="module")
def dog(asset_paths):
    return load_rgb(asset_paths.photos / "dog.jpg")  # 800 x 534


@pytest.fixture(scope="module")
def sam(sam_model, dog):
    p = es.SamPredictor(sam_model)
    p.set_image(dog)
    return p


@pytest.fixture(scope="module")
def esam(esam_model, dog):
    p = es.SamPredictor(esam_model)
    p.set_image(dog)
    return p


@pytest.fixture(params=["sam", "efficient_sam"])
def pred(request, sam, esam):
    """A predictor of either family with dog.jpg (W 800, H 534) set."""
    return sam if request.param == "sam" else esam


def embedding_of(model, image, **kw) -> torch.Tensor:
    p = es.SamPredictor(model)
    p.set_image(image, **kw)
    return p.get_image_embedding()


PT = np.array([[400.0, 300.0]])
ONE = np.array([1])
BOX = np.array([300.0, 200.0, 500.0, 400.0])

# ---------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(64, 64, 2), (1, 64, 64, 3), (64, 64, 5), (3, 64, 64, 1), (64,)], ids=str
)
def test_bad_image_shape(sam_model, shape):
    with pytest.raises(ValueError, match=r"expected an HxWx3 RGB image .* got shape"):
        es.SamPredictor(sam_model).set_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_, np.int64, np.uint16])
def test_bad_image_dtype(sam_model, dtype):
    with pytest.raises(TypeError, match=f"expected a uint8 image .*got dtype {np.dtype(dtype)}"):
        es.SamPredictor(sam_model).set_image(np.zeros((64, 64, 3), dtype))


@pytest.mark.parametrize(
    "image",
    [np.zeros((0, 64, 3), np.uint8), np.zeros((64, 0, 3), np.uint8), np.zeros((0, 0), np.uint8),
     Image.new("RGB", (0, 0))],
    ids=["no-rows", "no-cols", "gray-empty", "pil-empty"],
)
def test_empty_image(sam_model, image):
    with pytest.raises(ValueError, match="image is empty"):
        es.SamPredictor(sam_model).set_image(image)


def test_not_an_image(sam_model):
    with pytest.raises(TypeError, match="numpy array or PIL image"):
        es.SamPredictor(sam_model).set_image([[0, 0, 0]])
    with pytest.raises(ValueError, match="image_format must be 'RGB' or 'BGR'"):
        es.SamPredictor(sam_model).set_image(np.zeros((8, 8, 3), np.uint8), image_format="rgb")


def test_no_image_set(sam_model, dog):
    p = es.SamPredictor(sam_model)
    for call in (
        lambda: p.predict(PT, ONE),
        lambda: p.predict_torch(torch.tensor(PT)[None], torch.tensor(ONE)[None]),
        p.get_image_embedding,
    ):
        with pytest.raises(RuntimeError, match=r"no image is set: call set_image"):
            call()
    p.set_image(dog)
    p.predict(PT, ONE)
    p.reset_image()
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(PT, ONE)


@pytest.fixture(scope="module")
def rgba(asset_paths):
    img = Image.open(asset_paths.photos / "hq_example6.png")
    assert img.mode == "RGBA"
    return img


@pytest.mark.parametrize("model_name", ["sam_model", "esam_model"])
def test_rgba_equals_rgb(request, rgba, model_name):
    model = request.getfixturevalue(model_name)
    rgb = np.asarray(rgba.convert("RGB"))
    want = embedding_of(model, rgb)
    assert torch.equal(embedding_of(model, rgba), want)  # PIL RGBA
    arr = np.array(rgba)  # H x W x 4
    assert arr.shape == (*rgb.shape[:2], 4)
    assert torch.equal(embedding_of(model, arr), want)
    # alpha is dropped, not blended: a transparent image still shows its colours
    arr[..., 3] = np.random.randint(0, 256, arr.shape[:2], dtype=np.uint8)
    assert torch.equal(embedding_of(model, arr), want)
    assert torch.equal(embedding_of(model, Image.fromarray(arr, "RGBA")), want)


def test_grayscale_equals_replicated_rgb(sam_model, rgba):
    gray = rgba.convert("L")
    g = np.asarray(gray)
    want = embedding_of(sam_model, np.repeat(g[:, :, None], 3, axis=2))
    assert torch.equal(embedding_of(sam_model, gray), want)  # PIL "L"
    assert torch.equal(embedding_of(sam_model, g), want)  # H x W
    assert torch.equal(embedding_of(sam_model, g[:, :, None]), want)  # H x W x 1


def test_bgr_and_tensor_input(sam_model, dog):
    want = embedding_of(sam_model, dog)
    assert torch.equal(embedding_of(sam_model, dog[:, :, ::-1], image_format="BGR"), want)
    assert torch.equal(embedding_of(sam_model, np.ascontiguousarray(dog[:, :, ::-1]), image_format="BGR"), want)
    assert torch.equal(embedding_of(sam_model, torch.from_numpy(dog.copy())), want)
    assert not torch.equal(embedding_of(sam_model, dog[:, :, ::-1]), want)  # the channel order matters


# ---------------------------------------------------------------------------------------------------
# Prompts: errors
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_coordinates(pred, bad):
    with pytest.raises(ValueError, match="point_coords contain NaN or infinite"):
        pred.predict(np.array([[bad, 100.0]]), ONE)
    with pytest.raises(ValueError, match="boxes contain NaN or infinite"):
        pred.predict(box=np.array([10.0, 10.0, bad, 100.0]))
    with pytest.raises(ValueError, match="point_coords contain NaN or infinite"):
        pred.predict_torch(torch.tensor([[[100.0, bad]]]), torch.tensor([[1]]))


@pytest.mark.parametrize("xy", [(-1.0, 10.0), (10.0, -0.5), (801.0, 10.0), (10.0, 534.5)])
def test_point_outside_image(pred, xy):
    with pytest.raises(ValueError, match=r"lies outside the 800x534 image"):
        pred.predict(np.array([xy]), ONE)


def test_padding_points_may_lie_outside(pred):
    """Label -1 points are padding; their coordinates are not checked."""
    masks, _, _ = pred.predict(np.array([[400.0, 300.0], [-1.0, -1.0]]), np.array([1, -1]))
    assert masks.shape[1:] == (534, 800)
    pred.predict(np.array([[0.0, 0.0], [800.0, 534.0]]), np.array([1, 1]))  # the image border is inside


@pytest.mark.parametrize(
    "box", [[-5, 10, 100, 100], [10, 10, 801, 100], [10, 10, 100, 600]], ids=["x0<0", "x1>W", "y1>H"]
)
def test_box_outside_image(pred, box):
    with pytest.raises(ValueError, match=r"box outside the 800x534 image"):
        pred.predict(box=np.array(box, dtype=float))


@pytest.mark.parametrize("box", [[300, 200, 100, 400], [100, 400, 300, 200]], ids=["x", "y"])
def test_inverted_box(pred, box):
    with pytest.raises(ValueError, match=r"inverted box: boxes are \(x0, y0, x1, y1\)"):
        pred.predict(box=np.array(box, dtype=float))
    with pytest.raises(ValueError, match="inverted box"):
        pred.predict_torch(None, None, torch.tensor(np.array([BOX, box]), dtype=torch.float))


def test_empty_prompts(pred):
    with pytest.raises(ValueError, match="no prompt given"):
        pred.predict()
    with pytest.raises(ValueError, match="no prompt given"):
        pred.predict_torch(None, None)
    with pytest.raises(ValueError, match="point_coords is empty"):
        pred.predict(np.zeros((0, 2)), np.zeros((0,), np.int64))
    with pytest.raises(ValueError, match=r"only padding points \(label -1\)"):
        pred.predict(np.array([[10.0, 10.0], [20.0, 20.0]]), np.array([-1, -1]))
    with pytest.raises(ValueError, match="only padding points"):  # one prompt of a batch
        pred.predict_torch(torch.tensor([[[10.0, 10.0]], [[20.0, 20.0]]]), torch.tensor([[1], [-1]]))


def test_label_shape_mismatch(pred):
    with pytest.raises(ValueError, match=r"point_labels must be \(B, N\) = \(1, 2\)"):
        pred.predict(np.array([[10.0, 10.0], [20.0, 20.0]]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match=r"point_labels must have shape \(N\)"):
        pred.predict(np.array([[10.0, 10.0], [20.0, 20.0]]), np.array([[1, 1]]))
    with pytest.raises(ValueError, match=r"point_labels must be \(B, N\)"):
        pred.predict_torch(torch.zeros(2, 3, 2) + 5, torch.ones(2, 2))


def test_coordinate_shapes(pred):
    with pytest.raises(ValueError, match=r"point_coords must have shape \(N, 2\), got \(2, 3\)"):
        pred.predict(np.ones((2, 3)), np.array([1, 1]))
    with pytest.raises(ValueError, match=r"point_coords must have shape \(N, 2\)"):
        pred.predict(np.array([10.0, 10.0]), ONE)
    with pytest.raises(ValueError, match=r"point_coords must be \(B, N, 2\)"):
        pred.predict_torch(torch.ones(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match=r"box must have 4 numbers"):
        pred.predict(box=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"boxes must be \(B, 4\)"):
        pred.predict_torch(None, None, torch.ones(2, 3))
    with pytest.raises(TypeError, match="point_coords must be numeric"):
        pred.predict(np.array([["1", "2"]]), ONE)


def test_coords_and_labels_go_together(pred):
    with pytest.raises(ValueError, match="point_coords and point_labels must be given together"):
        pred.predict(point_coords=PT)
    with pytest.raises(ValueError, match="must be given together"):
        pred.predict(point_labels=ONE)
    with pytest.raises(ValueError, match="must be given together"):
        pred.predict_torch(torch.tensor(PT)[None], None)


@pytest.mark.parametrize("label", [2, 3])
def test_sam_rejects_box_corner_labels(sam, label):
    with pytest.raises(ValueError, match=rf"point labels \[{label}\] are not valid .*give boxes with boxes="):
        sam.predict(np.array([[10.0, 10.0], [100.0, 100.0]]), np.array([1, label]))


@pytest.mark.parametrize("label", [4, -2])
def test_unknown_labels(pred, label):
    with pytest.raises(ValueError, match=rf"point labels \[{label}\] are not valid for this model"):
        pred.predict(PT, np.array([label]))


def test_non_integer_labels(pred):
    with pytest.raises(ValueError, match="point_labels must be integers"):
        pred.predict(PT, np.array([0.5]))


def test_efficient_sam_corner_labels_are_a_box(esam):
    """EfficientSAM takes labels 2/3 as box corners, the same as boxes=."""
    via_labels = esam.predict(BOX.reshape(2, 2), np.array([2, 3]))
    via_box = esam.predict(box=BOX)
    assert np.array_equal(via_labels[0], via_box[0])
    np.testing.assert_allclose(via_labels[2], via_box[2], rtol=0, atol=1e-5)


def test_efficient_sam_too_many_points(esam):
    pts = np.array([[100.0 + 50 * i, 200.0] for i in range(7)])
    with pytest.raises(ValueError, match=r"at most 6 points per prompt \(a box counts as 2\), got 7"):
        esam.predict(pts, np.ones(7, np.int64))
    with pytest.raises(ValueError, match=r"at most 6 points .* got 7"):
        esam.predict(pts[:5], np.ones(5, np.int64), box=BOX)
    esam.predict(pts[:4], np.ones(4, np.int64), box=BOX)  # 4 + 2 = 6 is fine
    esam.predict(pts[:6], np.ones(6, np.int64))


def test_efficient_sam_warns_on_negative_points(esam):
    with pytest.warns(UserWarning, match="not trained with negative points"):
        esam.predict(np.array([[400.0, 300.0], [100.0, 100.0]]), np.array([1, 0]))


def test_efficient_sam_has_no_mask_input(esam):
    with pytest.raises(ValueError, match="no mask-prompt input"):
        esam.predict(PT, ONE, mask_input=np.zeros((1, 256, 256), np.float32))
    with pytest.raises(ValueError, match="no mask-prompt input"):
        esam.predict_torch(torch.tensor(PT)[None], torch.tensor(ONE)[None], mask_input=torch.zeros(1, 1, 256, 256))


def test_mask_input_shape_and_values(sam):
    with pytest.raises(ValueError, match=r"mask_input must have shape \(1, N, N\), got \(256, 256\)"):
        sam.predict(PT, ONE, mask_input=np.zeros((256, 256), np.float32))
    with pytest.raises(ValueError, match=r"mask_input must be \(B, 1, 256, 256\) low-res logits, got \(1, 1, 128"):
        sam.predict(PT, ONE, mask_input=np.zeros((1, 128, 128), np.float32))
    with pytest.raises(ValueError, match=r"mask_input must be \(B, 1, 256, 256\)"):
        sam.predict_torch(torch.tensor(PT)[None], torch.tensor(ONE)[None], mask_input=torch.zeros(1, 256, 256))
    bad = np.zeros((1, 256, 256), np.float32)
    bad[0, 5, 5] = np.nan
    with pytest.raises(ValueError, match="mask_input contains NaN or infinite"):
        sam.predict(PT, ONE, mask_input=bad)


def test_batch_sizes_disagree(sam):
    coords, labels = torch.tensor([[[400.0, 300.0]]] * 2), torch.ones(2, 1)
    boxes = torch.tensor(np.array([BOX] * 3), dtype=torch.float)
    with pytest.raises(ValueError, match=r"prompt batch sizes disagree: \[2, 3\]"):
        sam.predict_torch(coords, labels, boxes)
    with pytest.raises(ValueError, match=r"prompt batch sizes disagree: \[2, 3\]"):
        sam.predict_torch(coords, labels, mask_input=torch.zeros(3, 1, 256, 256))


# ---------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multimask", [True, False])
def test_predict_outputs(pred, multimask):
    c = 3 if multimask else 1
    masks, iou, low = pred.predict(PT, ONE, box=BOX, multimask_output=multimask)
    assert isinstance(masks, np.ndarray) and masks.shape == (c, 534, 800) and masks.dtype == np.bool_
    assert isinstance(iou, np.ndarray) and iou.shape == (c,) and iou.dtype == np.float32
    assert isinstance(low, np.ndarray) and low.shape == (c, 256, 256) and low.dtype == np.float32
    logits, _, _ = pred.predict(PT, ONE, box=BOX, multimask_output=multimask, return_logits=True)
    assert logits.shape == (c, 534, 800) and logits.dtype == np.float32
    assert np.array_equal(logits > pred.model.mask_threshold, masks)
    # prompts as python lists and ints are fine; the notebook's (1, 4) box equals the (4,) one
    same = pred.predict([[400, 300]], [1], box=[[300, 200, 500, 400]], multimask_output=multimask)
    assert np.array_equal(same[0], masks)
    np.testing.assert_allclose(same[2], low, rtol=0, atol=1e-5)


def _negative_point_warning(pred):
    """EfficientSAM warns about label 0; SAM does not."""
    if pred.model.config.family == "efficient_sam":
        return pytest.warns(UserWarning, match="negative points")
    return contextlib.nullcontext()


@pytest.mark.parametrize("multimask", [True, False])
def test_predict_torch_outputs(pred, multimask):
    c = 3 if multimask else 1
    coords = torch.tensor([[[400.0, 300.0], [200.0, 100.0]], [[600.0, 400.0], [0.0, 0.0]], [[10.0, 20.0], [5.0, 5.0]]])
    labels = torch.tensor([[1, 1], [1, -1], [1, 0]])
    boxes = torch.tensor(np.array([BOX, [0.0, 0.0, 800.0, 534.0], [0.0, 0.0, 40.0, 50.0]]), dtype=torch.float)
    with _negative_point_warning(pred):
        masks, iou, low = pred.predict_torch(coords, labels, boxes, multimask_output=multimask)
    assert masks.shape == (3, c, 534, 800) and masks.dtype == torch.bool
    assert iou.shape == (3, c) and iou.dtype == torch.float32
    assert low.shape == (3, c, 256, 256) and low.dtype == torch.float32
    # each prompt of the batch equals the same prompt alone
    with _negative_point_warning(pred):
        one = pred.predict_torch(coords[2:], labels[2:], boxes[2:], multimask_output=multimask)
    torch.testing.assert_close(one[2], low[2:], rtol=0, atol=1e-5)
    assert pred.get_image_embedding().shape == (1, 256, 64, 64)


def test_sizes(sam, esam):
    assert sam.original_size == esam.original_size == (534, 800)
    assert tuple(sam.input_size) == (684, 1024)  # longest side to 1024: int(534 * 1.28 + 0.5)
    assert tuple(esam.input_size) == (1024, 1024)  # stretched


def test_sam_mask_only_prompt(sam):
    """SAM accepts a mask prompt on its own (e.g. a previous low-res output)."""
    _, iou, low = sam.predict(PT, ONE)
    masks, iou2, low2 = sam.predict(mask_input=low[np.argmax(iou)][None], multimask_output=False)
    assert masks.shape == (1, 534, 800) and low2.shape == (1, 256, 256)


# ---------------------------------------------------------------------------------------------------
# Issue 13: bad input gets a clear error naming the parameter, never a silent answer
# ---------------------------------------------------------------------------------------------------

XY = torch.tensor([[[400.0, 300.0]]])
L1 = torch.tensor([[1]])
TL, BR = [300.0, 200.0], [500.0, 400.0]


def _pil(mode):
    return lambda p: p.set_image(Image.new(mode, (64, 48)))


BAD_PREDICTOR_INPUTS = [
    # images: more than 8 bits per channel would be clipped by convert("RGB")
    ("sam", _pil("I;16"), TypeError, r"image has PIL mode 'I;16' .*clips to 0-255; scale it to 8 bits"),
    ("sam", _pil("I"), TypeError, r"image has PIL mode 'I' "),
    ("sam", _pil("F"), TypeError, r"image has PIL mode 'F' .*\[0, 1\] float image"),
    ("sam", _pil("La"), ValueError, r"image: cannot convert PIL mode 'La' to RGB"),
    ("sam", lambda p: p.set_image(torch.zeros(3, 48, 64, dtype=torch.uint8)), ValueError, r"CxHxW tensor\? permute"),
    # boxes
    ("both", lambda p: p.predict(box=np.array([300.0, 200.0, 300.0, 400.0])), ValueError, r"zero-area box \[300"),
    ("both", lambda p: p.predict(box=np.array([300.0, 200.0, 500.0, 200.0])), ValueError, "zero-area box"),
    ("both", lambda p: p.predict_torch(None, None, torch.tensor([BOX.tolist(), [9.0, 9.0, 9.0, 9.0]])),
     ValueError, r"zero-area box \[9.0, 9.0, 9.0, 9.0\]"),
    ("both", lambda p: p.predict(box=BOX.reshape(2, 2)), ValueError, r"box must have 4 numbers .*got shape \(2, 2\)"),
    ("both", lambda p: p.predict(box=BOX.reshape(1, 1, 4)), ValueError, r"box must have 4 numbers .*\(1, 1, 4\)"),
    ("both", lambda p: p.predict_torch(None, None, torch.tensor(BOX).reshape(1, 1, 4)), ValueError,
     r"boxes must be \(B, 4\)"),
    ("both", lambda p: p.predict_torch(None, None, torch.ones(1, 4, dtype=torch.bool)), TypeError,
     "boxes must be real numbers .*torch.bool"),
    ("both", lambda p: p.predict_torch(None, None, torch.tensor(BOX, dtype=torch.complex64)[None]), TypeError,
     "boxes must be real numbers .*complex64"),
    # EfficientSAM box corners as points 2/3: paired and not inverted, as box= would be
    ("efficient_sam", lambda p: p.predict(np.array([TL]), np.array([2])), ValueError,
     r"point_labels: each box corner label 2 \(top-left\) needs its label 3"),
    ("efficient_sam", lambda p: p.predict(np.array([BR, PT[0]]), np.array([3, 1])), ValueError, "needs its label 3"),
    ("efficient_sam", lambda p: p.predict_torch(torch.tensor([[TL], [BR]]), torch.tensor([[2], [3]])), ValueError,
     "in the same prompt"),
    ("efficient_sam", lambda p: p.predict(np.array([BR, TL]), np.array([2, 3])), ValueError,
     r"point_coords: inverted box corners: label 2 is the top-left"),
    ("efficient_sam", lambda p: p.predict(np.array([[300.0, 400.0], [500.0, 200.0]]), np.array([2, 3])), ValueError,
     "inverted box corners"),
    ("efficient_sam", lambda p: p.predict(np.array([TL, [300.0, 300.0]]), np.array([2, 3])), ValueError,
     "point_coords: zero-area box corners"),
    # dtypes predict refuses are refused by predict_torch too
    ("both", lambda p: p.predict_torch(XY, torch.tensor([[True]])), TypeError,
     r"point_labels must be integers .*got dtype torch.bool"),
    ("both", lambda p: p.predict_torch(XY.bool(), L1), TypeError, "point_coords must be real numbers .*torch.bool"),
    ("both", lambda p: p.predict_torch(XY.to(torch.complex64), L1), TypeError,
     r"point_coords must be real numbers \(int or float\), got dtype torch.complex64"),
    ("both", lambda p: p.predict(PT.astype(np.complex128), ONE), TypeError,
     r"point_coords must be numeric \(int or float\), got dtype complex128"),
    ("both", lambda p: p.predict(PT, np.array([True])), TypeError, "point_labels must be numeric .*bool"),
    ("both", lambda p: p.predict_torch([[["a", "b"]]], [[1]]), TypeError, "point_coords must be a tensor or array"),
    ("both", lambda p: p.predict_torch([[[1.0, 2.0], [3.0]]], [[1, 1]]), TypeError,
     "point_coords must be a tensor or array"),
    ("both", lambda p: p.predict([[1.0, 2.0], [3.0]], [1, 1]), ValueError,
     "point_coords must be a rectangular array"),
    ("sam", lambda p: p.predict_torch(XY, L1, mask_input=torch.zeros(1, 1, 256, 256, dtype=torch.bool)), TypeError,
     r"mask_input must be low-res logits .*got dtype torch.bool"),
    ("sam", lambda p: p.predict(PT, ONE, mask_input=np.zeros((1, 256, 256), bool)), TypeError,
     "mask_input must be numeric"),
    ("both", lambda p: p.predict_torch(torch.zeros(0, 1, 2), torch.zeros(0, 1), hq_token_only=True), ValueError,
     "hq_token_only applies to HQ models only"),
    ("both", lambda p: p.predict(PT, ONE, multimask_output="False"), TypeError,
     "multimask_output must be True or False, got 'False'"),
    ("both", lambda p: p.predict_torch(XY, L1, return_logits=None), TypeError, "return_logits must be True or False"),
    ("sam", lambda p: p.set_image("dog.jpg"), TypeError, r"got str \(open a file with PIL.Image.open first\)"),
]


@pytest.mark.parametrize(
    "family, call, exc, match", BAD_PREDICTOR_INPUTS,
    ids=[f"{i:02d}-{c[0]}" for i, c in enumerate(BAD_PREDICTOR_INPUTS)],
)
def test_bad_predictor_inputs(sam, esam, family, call, exc, match):
    for p in {"sam": [sam], "efficient_sam": [esam], "both": [sam, esam]}[family]:
        with pytest.raises(exc, match=match):
            call(p)
        assert p.original_size == (534, 800)  # image errors leave the image that was set


@pytest.mark.parametrize("model_name", ["sam_model", "esam_model"])
@pytest.mark.parametrize("hw", [(1, 4000), (4000, 1), (2, 3000)], ids=str)
def test_thin_image(request, model_name, hw):
    """A side the longest-side resize rounds to 0 is kept at 1 pixel (the official code cannot resize these)."""
    p = es.SamPredictor(request.getfixturevalue(model_name))
    p.set_image(np.full((*hw, 3), 128, np.uint8))
    masks, iou, low = p.predict(box=np.array([0.0, 0.0, hw[1], hw[0]]))
    assert masks.shape == (3, *hw) and np.isfinite(iou).all() and np.isfinite(low).all()
    if model_name == "sam_model":
        assert min(p.input_size) == 1 and max(p.input_size) == 1024


def test_longest_side_is_the_official_one():
    """Exact to the official ResizeLongestSide wherever it gives a size of at least 1 pixel."""
    official = pytest.importorskip("segment_anything.utils.transforms").ResizeLongestSide.get_preprocess_shape
    from efficient_sam.transforms import longest_side_size

    for h in [1, 2, 3, 5, 7, 100, 333, 534, 683, 1000, 1023, 1024, 1025, 1500, 2047, 3000, 4000]:
        for w in [1, 2, 3, 9, 250, 511, 512, 513, 800, 999, 1024, 1999, 4000, 4001]:
            want = official(h, w, 1024)
            got = longest_side_size(h, w, 1024)
            assert got == tuple(max(1, v) for v in want), (h, w)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("return_logits", [True, False])
def test_empty_batch(pred, multimask, return_logits):
    """An empty batch gives empty outputs shaped (and typed) as a batch of one."""
    kw = dict(multimask_output=multimask, return_logits=return_logits)
    one = pred.predict_torch(XY, L1, **kw)
    for empty in (
        pred.predict_torch(torch.zeros(0, 1, 2), torch.zeros(0, 1, dtype=torch.long), **kw),
        pred.predict_torch(None, None, torch.zeros(0, 4), **kw),
    ):
        for a, b in zip(one, empty):
            assert b.shape == (0, *a.shape[1:]) and b.dtype == a.dtype and b.device == a.device


def test_efficient_sam_corner_pairs(esam):
    """Corner labels pair up within a prompt in any order; two boxes' corners in one prompt are fine."""
    want = esam.predict(np.array([TL, BR]), np.array([2, 3]))[2]
    np.testing.assert_allclose(esam.predict(np.array([BR, TL]), np.array([3, 2]))[2], want, rtol=0, atol=1e-5)
    esam.predict(np.array([TL, BR, [100.0, 100.0], [200.0, 150.0]]), np.array([2, 3, 2, 3]))


def test_pil_bgr_is_flipped_like_an_array(sam_model, dog):
    want = embedding_of(sam_model, dog[:, :, ::-1], image_format="BGR")
    assert torch.equal(embedding_of(sam_model, Image.fromarray(dog[:, :, ::-1].copy()), image_format="BGR"), want)


# ---------------------------------------------------------------------------------------------------
# esam-predict
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, asset_paths, tmp_path):
    """Run esam-predict on dog.jpg (TMP in an argument: tmp_path) with small random models -> exit code."""
    from efficient_sam.tools import predict

    build = es.build_model

    def small(name, checkpoint=None, device=None):
        extra = dict(encoder_global_attn_indexes=(0,)) if name.startswith("sam") else {}
        return build(name, device=device, **SMALL, **extra)

    monkeypatch.setattr(es, "build_model", small)
    (tmp_path / "not_an_image.png").write_text("hello")
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")

    def run(*args):
        argv = ["--image", str(asset_paths.photos / "dog.jpg"), "--out", str(tmp_path / "out.png"), *args]
        argv = [a.replace("TMP", str(tmp_path)) for a in argv]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights; EfficientSAM's label-0 warning
            try:
                return predict.main(argv)
            except SystemExit as e:
                return e.code

    return run


BAD_CLI_INPUTS = [
    (["--point", "400,267,0.5"],
     r"argument --point: the label must be an integer, one of -1, 0, 1, 2, 3 .*got '400,267,0.5'"),
    (["--point", "400,267,5"], "argument --point: the label must be an integer"),
    (["--point", "400,267,one"], "argument --point: must be comma-separated numbers"),
    (["--point", "400,nan"], "argument --point: must be finite numbers"),
    (["--point", "400"], "argument --point: needs 2 or 3 numbers"),
    (["--box", "1,2,inf,4"], "argument --box: must be finite numbers"),
    (["--box", "1,2,3"], "argument --box: needs 4 numbers"),
    ([], "give at least one --point or a --box"),
    (["--point", "1,1", "--model", "efficient_sam_vit"], r"--model: unknown model 'efficient_sam_vit'; one of"),
    (["--point", "1,1", "--checkpoint", "TMP/missing.pt"], r"--checkpoint: '.*missing.pt' is not a file"),
    (["--point", "1,1", "--device", "gpu0"], "--device: not a torch device"),
    (["--point", "1,1", "--image", "TMP/missing.jpg"], "--image: no such file"),
    (["--point", "1,1", "--image", "TMP/not_an_image.png"], "--image: cannot read"),
    (["--point", "1,1", "--image", "TMP/deep.png"], r"--image .*deep.png': image has PIL mode 'I"),
    (["--point", "1,1", "--out", "TMP/no/such/dir/out.png"], "--out: folder .* does not exist"),
    (["--point", "1,1", "--mask-out", "TMP/mask.xyz"], "--mask-out: .* no image extension"),
    # the model's own checks, reported the same way
    (["--point", "900,100"], r"--point / --box: point \[900.0, 100.0\] lies outside the 800x534 image"),
    (["--box", "100,100,100,300"], "--point / --box: zero-area box"),
    (["--box", "300,100,100,300"], "--point / --box: inverted box"),
    (["--model", "sam_vit_b", "--point", "100,100,2"],
     r"--point / --box: point labels \[2\] are not valid for this model"),
    (["--point", "100,100,2"], "--point / --box: .*needs its label 3"),
]


@pytest.mark.parametrize("args, match", BAD_CLI_INPUTS, ids=[" ".join(a) for a, _ in BAD_CLI_INPUTS])
def test_bad_cli_inputs(cli, capsys, args, match):
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"esam-predict: error: " + match, err), err


def test_cli_runs(cli, capsys, tmp_path):
    """Integral labels given as floats (1.0) stay accepted; both outputs are written."""
    assert cli("--point", "400,267,1.0", "--point", "100,100,0", "--mask-out", "TMP/mask.png") == 0
    assert Image.open(tmp_path / "out.png").size == (800, 534)
    assert Image.open(tmp_path / "mask.png").size == (800, 534)
    assert cli("--model", "sam_vit_b", "--box", "300,200,500,400", "--single-mask") == 0
