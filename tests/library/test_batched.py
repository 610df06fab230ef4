"""Several images at once: `SamPredictor.set_images` + `predict(..., image_index=i)`, and the official
batched entry point `Sam.forward(batched_input, multimask_output)`.

Small random models of both families (one encoder block at the real 1024 input), real photos of three
sizes (landscape 800x534 and 1072x603, portrait 450x600). Oracles: `set_image` + `predict` per image
for the predictor; the official `segment_anything.Sam.forward` on identical weights for SAM's
`forward`; our (parity-tested) predictor for EfficientSAM's `forward`, whose official forward has
another signature.

Tolerances. Batched vs one-by-one encoding differs only by float noise of the batched matmuls:
embeddings, low-res logits and IoU within REL (1e-5 relative). Against the official model: TOL
(1e-4 relative) on low-res logits and IoU. Boolean masks must be identical, except at pixels where the
reference logit lies within MASK_TOL (1e-4) of the threshold 0, where float noise may flip them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segment_anything.utils.transforms import ResizeLongestSide

import efficient_sam as es
from helpers import GRABCUT, PHOTOS, load_rgb, randomize_, rel_err
from official_sam import build_official_sam

REL = 1e-5
TOL = 1e-4
MASK_TOL = 1e-4

SMALL = dict(encoder_depth=1, encoder_embed_dim=32, encoder_num_heads=1)
SMALL_OFFICIAL = dict(embed_dim=32, depth=1, num_heads=1, global_attn_indexes=(0,))

PATHS = [PHOTOS / "dog.jpg", GRABCUT / "images" / "grabcut_sheep.jpg", PHOTOS / "dogs.jpg"]


@pytest.fixture(scope="module")
def photos():
    imgs = [load_rgb(p) for p in PATHS]
    assert [i.shape[:2] for i in imgs] == [(534, 800), (600, 450), (603, 1072)]
    return imgs


@pytest.fixture(scope="module")
def official_sam():
    return randomize_(build_official_sam(**SMALL_OFFICIAL), seed=11).eval()


@pytest.fixture(scope="module")
def sam_model(official_sam):
    ours = es.build_model("sam_vit_b", encoder_global_attn_indexes=(0,), **SMALL)
    ours.load_state_dict(official_sam.state_dict())  # strict: the official key layout
    return ours.eval()


@pytest.fixture(scope="module")
def esam_model():
    return randomize_(es.build_model("efficient_sam_vitt", **SMALL), seed=12).eval()


@pytest.fixture(scope="module")
def models(sam_model, esam_model):
    return {"sam": sam_model, "efficient_sam": esam_model}


class EncoderCalls:
    """Counts the image encoder's calls and their batch sizes (at its patch embedding, which the plain
    and the HQ encoding both run once per call)."""

    def __init__(self, model):
        self.batches = []
        self._h = model.image_encoder.patch_embed.register_forward_hook(lambda m, args, out: self.batches.append(args[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._h.remove()


def _prompts(size, family):
    """Per-image prompt sets (original-image pixels) of `predict_torch`: points, points + boxes, boxes."""
    h, w = size
    pts = torch.tensor([[[0.3 * w, 0.4 * h], [0.6 * w, 0.5 * h]], [[0.5 * w, 0.5 * h], [0.2 * w, 0.8 * h]]])
    neg = 0 if family == "sam" else 1  # EfficientSAM warns on negatives
    labels = torch.tensor([[1, neg], [1, 1]])
    boxes = torch.tensor([[0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h], [0.4 * w, 0.1 * h, 0.95 * w, 0.6 * h]])
    return [
        dict(point_coords=pts, point_labels=labels),
        dict(point_coords=pts[:, :1], point_labels=labels[:, :1], boxes=boxes),
        dict(point_coords=None, point_labels=None, boxes=boxes),
    ]


def assert_masks_match(ours: torch.Tensor, ref_logits: torch.Tensor, threshold: float = 0.0) -> None:
    assert ours.dtype == torch.bool and ours.shape == ref_logits.shape, (ours.dtype, ours.shape, ref_logits.shape)
    bad = (ours != (ref_logits > threshold)) & ((ref_logits - threshold).abs() > MASK_TOL)
    assert not bad.any(), f"{int(bad.sum())} of {bad.numel()} mask pixels differ away from the threshold"


# ---------------------------------------------------------------------------------------------------
# SamPredictor.set_images


@pytest.mark.parametrize("family", ["sam", "efficient_sam"])
def test_set_images_equals_set_image(models, photos, family):
    model = models[family]
    batched = es.SamPredictor(model)
    with EncoderCalls(model) as calls:
        batched.set_images(photos)
    assert calls.batches == [len(photos)]  # one encoder call for all images
    assert batched.get_image_embedding().shape == (3, 256, 64, 64)
    assert batched.original_sizes == [p.shape[:2] for p in photos]
    assert batched.original_size is None  # several images: no single size
    single = es.SamPredictor(model)
    for i, img in enumerate(photos):
        single.set_image(img)
        assert batched.original_sizes[i] == single.original_size and batched.input_sizes[i] == single.input_size
        assert rel_err(batched.get_image_embedding(image_index=i), single.get_image_embedding()) <= REL
        for prompt in _prompts(img.shape[:2], family):
            for multimask in (True, False):
                got = batched.predict_torch(**prompt, multimask_output=multimask, image_index=i)
                want = single.predict_torch(**prompt, multimask_output=multimask, return_logits=True)
                assert rel_err(got[2], want[2]) <= REL and rel_err(got[1], want[1]) <= REL
                assert_masks_match(got[0], want[0], model.mask_threshold)
        # the numpy `predict`, one prompt
        pt, lab = np.array([[img.shape[1] * 0.5, img.shape[0] * 0.5]]), np.array([1])
        m, iou, low = batched.predict(pt, lab, image_index=i)
        m1, iou1, low1 = single.predict(pt, lab, return_logits=True)
        assert m.shape == m1.shape == (3, *img.shape[:2])
        assert rel_err(low, low1) <= REL and rel_err(iou, iou1) <= REL
        assert_masks_match(torch.from_numpy(m), torch.from_numpy(m1), model.mask_threshold)


def test_set_image_after_set_images(sam_model, photos):
    """`set_image` replaces a batch and behaves as before (image_index optional, 0 only)."""
    p = es.SamPredictor(sam_model)
    p.set_images(photos[:2])
    p.set_image(photos[2])
    assert p.original_size == photos[2].shape[:2] and p.original_sizes == [photos[2].shape[:2]]
    assert p.get_image_embedding().shape == (1, 256, 64, 64)
    pt, lab = np.array([[500.0, 300.0]]), np.array([1])
    a = p.predict(pt, lab)
    b = p.predict(pt, lab, image_index=0)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    with pytest.raises(IndexError, match=r"image_index 1 is out of range: 1 image\(s\) set"):
        p.predict(pt, lab, image_index=1)
    # a one-image batch is a set_image
    q = es.SamPredictor(sam_model)
    q.set_images([photos[2]])
    assert q.original_size == photos[2].shape[:2]
    assert torch.equal(q.get_image_embedding(), p.get_image_embedding())
    for x, y in zip(q.predict(pt, lab), a):
        assert np.array_equal(x, y)


def test_set_images_bad_input(sam_model, photos):
    p = es.SamPredictor(sam_model)
    with pytest.raises(ValueError, match="images is empty"):
        p.set_images([])
    with pytest.raises(TypeError, match="images must be a list or tuple"):
        p.set_images(np.stack([photos[0], photos[0]]))
    with pytest.raises(TypeError, match=r"images\[1\]: expected a uint8 image .*got dtype float32"):
        p.set_images([photos[0], photos[1].astype(np.float32)])
    with pytest.raises(ValueError, match=r"images\[0\]: expected an HxWx3 RGB image .*got shape \(3, 64, 64\)"):
        p.set_images([np.zeros((3, 64, 64), np.uint8)])
    with pytest.raises(TypeError, match=r"images\[0\]: expected a numpy array or PIL image"):
        p.set_images(["dog.jpg"])
    with pytest.raises(ValueError, match="image_format must be"):
        p.set_images(photos[:1], image_format="rgb")
    assert not p.is_image_set  # nothing was encoded
    p.set_images(photos[:2])
    pt, lab = np.array([[100.0, 100.0]]), np.array([1])
    with pytest.raises(ValueError, match=r"2 images are set \(set_images\): pass image_index"):
        p.predict(pt, lab)
    with pytest.raises(ValueError, match="pass image_index"):
        p.predict_torch(torch.tensor(pt)[None], torch.tensor(lab)[None])
    for bad in (2, -1):
        with pytest.raises(IndexError, match=rf"image_index {bad} is out of range: 2 image\(s\) set, valid 0 to 1"):
            p.predict(pt, lab, image_index=bad)
    with pytest.raises(IndexError, match="image_index 5 is out of range"):
        p.get_image_embedding(image_index=5)
    for bad in (1.0, True, "0"):
        with pytest.raises(TypeError, match="image_index must be an int"):
            p.predict(pt, lab, image_index=bad)
    # prompts are checked against the chosen image's size: (700, 100) is inside image 0 (800 wide) only
    far = np.array([[700.0, 100.0]])
    p.predict(far, lab, image_index=0)
    with pytest.raises(ValueError, match="outside the 450x600 image"):
        p.predict(far, lab, image_index=1)


# ---------------------------------------------------------------------------------------------------
# Sam.forward(batched_input, multimask_output)


def _official_records(photos):
    """Records as the official code expects (images resized by ResizeLongestSide, prompts in that frame),
    with every prompt kind: points, box + point, box + mask, nothing."""
    t = ResizeLongestSide(1024)
    g = torch.Generator().manual_seed(0)
    recs = []
    for k, img in enumerate(photos + photos[:1]):
        size = img.shape[:2]
        image = torch.as_tensor(t.apply_image(img)).permute(2, 0, 1).contiguous().float()
        p = _prompts(size, "sam")
        r = dict(image=image, original_size=size)
        if k == 0:
            r.update(point_coords=t.apply_coords_torch(p[0]["point_coords"], size), point_labels=p[0]["point_labels"])
        elif k == 1:
            r.update(
                point_coords=t.apply_coords_torch(p[1]["point_coords"], size), point_labels=p[1]["point_labels"],
                boxes=t.apply_boxes_torch(p[1]["boxes"], size),
            )
        elif k == 2:
            r.update(boxes=t.apply_boxes_torch(p[2]["boxes"][:1], size), mask_inputs=4 * torch.randn(1, 1, 256, 256, generator=g))
        recs.append(r)  # k == 3: no prompt at all (the official code makes one empty prompt)
    return recs


@pytest.mark.parametrize("multimask", [True, False], ids=["multi", "single"])
def test_forward_equals_official(official_sam, sam_model, photos, multimask):
    records = _official_records(photos)
    want = official_sam(records, multimask)
    with EncoderCalls(sam_model) as calls:
        got = sam_model(records, multimask)
    assert calls.batches == [len(records)]
    assert len(got) == len(want) == 4
    c = 3 if multimask else 1
    for r, g, w in zip(records, got, want):
        assert set(g) == {"masks", "iou_predictions", "low_res_logits"}
        b = w["masks"].shape[0]
        assert g["masks"].shape == w["masks"].shape == (b, c, *r["original_size"])
        assert g["iou_predictions"].shape == w["iou_predictions"].shape == (b, c)
        assert g["low_res_logits"].shape == w["low_res_logits"].shape == (b, c, 256, 256)
        assert rel_err(g["low_res_logits"], w["low_res_logits"]) <= TOL
        assert rel_err(g["iou_predictions"], w["iou_predictions"]) <= TOL
        o_logits = official_sam.postprocess_masks(w["low_res_logits"], r["image"].shape[-2:], r["original_size"])
        assert torch.equal(w["masks"], o_logits > 0)
        assert_masks_match(g["masks"], o_logits)


def test_forward_equals_predictor(models, photos):
    """Both families: `forward` on what `set_image` feeds the model equals `set_images` + `predict_torch`
    (SAM: image resized as the official code, prompts in that frame; EfficientSAM: the original image,
    prompts in original pixels)."""
    t = ResizeLongestSide(1024)
    for family, model in models.items():
        pred = es.SamPredictor(model)
        pred.set_images(photos)
        records, wants = [], []
        for i, img in enumerate(photos):
            size = img.shape[:2]
            prompt = _prompts(size, family)[1]
            wants.append(pred.predict_torch(**prompt, multimask_output=True, return_logits=True, image_index=i))
            if family == "sam":
                image = torch.as_tensor(t.apply_image(img)).permute(2, 0, 1).float()
                pts, boxes = t.apply_coords_torch(prompt["point_coords"], size), t.apply_boxes_torch(prompt["boxes"], size)
            else:
                image = torch.as_tensor(img).permute(2, 0, 1).float()
                pts, boxes = prompt["point_coords"], prompt["boxes"]
            records.append(dict(image=image, original_size=size, point_coords=pts, point_labels=prompt["point_labels"], boxes=boxes))
        got = model(records, True)
        for g, (w_logits, w_iou, w_low) in zip(got, wants):
            assert rel_err(g["low_res_logits"], w_low) <= REL, family
            assert rel_err(g["iou_predictions"], w_iou) <= REL, family
            assert_masks_match(g["masks"], w_logits, model.mask_threshold)


def test_forward_efficient_sam_uint8_and_padding_points(esam_model, photos):
    """EfficientSAM: a uint8 image equals its float copy; padding points (label -1, coordinates -1) stay -1."""
    img = photos[1]
    pts = torch.tensor([[[200.0, 300.0], [-1.0, -1.0]]])
    lab = torch.tensor([[1, -1]])
    rec = dict(original_size=img.shape[:2], point_coords=pts, point_labels=lab)
    a = esam_model([dict(rec, image=torch.as_tensor(img).permute(2, 0, 1))], False)[0]
    b = esam_model([dict(rec, image=torch.as_tensor(img).permute(2, 0, 1).float())], False)[0]
    for k in a:
        assert torch.equal(a[k], b[k])
    pred = es.SamPredictor(esam_model)
    pred.set_image(img)
    _, iou, low = pred.predict_torch(pts, lab, multimask_output=False)
    assert rel_err(a["low_res_logits"], low) <= REL and rel_err(a["iou_predictions"], iou) <= REL


def test_forward_with_tensors_unchanged(sam_model):
    """`forward(images_tensor, prompts...)` still is encoder + decoder on preprocessed input."""
    x = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    pts, lab = torch.tensor([[[100.0, 200.0]]] * 4), torch.tensor([[1]] * 4)
    with torch.no_grad():
        got = sam_model(x, pts, lab, None, None, True)
        want = sam_model.decode(sam_model.encode_image(x), pts, lab, None, None, True)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_forward_bad_input(models, photos):
    sam, esam = models["sam"], models["efficient_sam"]
    ok = torch.zeros(3, 1024, 683)
    cases = [
        ([], ValueError, "batched_input is empty"),
        (ok, None, None),  # a tensor is the other entry point: checked separately below
        ({"image": ok}, TypeError, "batched_input must be a list of dicts"),
        ([ok], TypeError, r"batched_input\[0\] must be a dict, got Tensor"),
        ([{"original_size": (10, 10)}], ValueError, r"batched_input\[0\] has no 'image'"),
        ([{"image": ok}], ValueError, r"batched_input\[0\] has no 'original_size'"),
        ([{"image": ok, "original_size": (1500, 1000), "point_coord": None}], ValueError, r"unknown keys \['point_coord'\]"),
        ([{"image": ok.numpy(), "original_size": (1500, 1000)}], TypeError, r"\['image'\] must be a torch tensor"),
        ([{"image": ok.bool(), "original_size": (1500, 1000)}], TypeError, r"\['image'\] must be real numbers .*torch.bool"),
        ([{"image": ok, "original_size": (1, 1)}, {"image": torch.zeros(1024, 683, 3), "original_size": (1, 1)}],
         ValueError, r"batched_input\[1\]\['image'\] must be a 3xHxW tensor, got shape \(1024, 683, 3\); an HxWx3"),
        ([{"image": ok[None], "original_size": (1, 1)}], ValueError, r"must be a 3xHxW tensor, got shape \(1, 3, 1024, 683\)"),
        ([{"image": torch.zeros(3, 1200, 800), "original_size": (1200, 800)}], ValueError, "larger than the model's 1024x1024 input"),
        ([{"image": ok, "original_size": (1500,)}], ValueError, r"\['original_size'\] must be \(H, W\)"),
        ([{"image": ok, "original_size": (1500, 0)}], ValueError, r"\['original_size'\] must be \(H, W\)"),
        ([{"image": ok, "original_size": (1500, 1000), "point_coords": torch.zeros(1, 1, 2)}], ValueError,
         "'point_coords' and 'point_labels' must be given together"),
        ([{"image": ok, "original_size": (1500, 1000), "point_coords": torch.zeros(1, 2), "point_labels": torch.ones(1)}],
         ValueError, r"\['point_coords'\] must be \(B, N, 2\)"),
        ([{"image": ok, "original_size": (1500, 1000), "point_coords": torch.zeros(2, 1, 2), "point_labels": torch.ones(2)}],
         ValueError, r"\['point_labels'\] must be a \(B, N\) = \(2, 1\) tensor"),
        ([{"image": ok, "original_size": (1500, 1000), "boxes": torch.zeros(4)}], ValueError, r"\['boxes'\] must be \(B, 4\)"),
        ([{"image": ok, "original_size": (1500, 1000), "boxes": [[0, 0, 5, 5]]}], TypeError, r"\['boxes'\] must be a real-valued torch tensor"),
        ([{"image": ok, "original_size": (1500, 1000), "boxes": torch.ones(2, 4), "mask_inputs": torch.zeros(3, 1, 256, 256)}],
         ValueError, r"prompt batch sizes disagree: \[2, 3\]"),
        ([{"image": ok, "original_size": (1500, 1000), "mask_inputs": torch.zeros(1, 256, 256)}], ValueError,
         r"\['mask_inputs'\] must be \(B, 1, 256, 256\)"),
    ]
    for batched, err, match in cases:
        if err is None:
            continue
        with pytest.raises(err, match=match):
            sam(batched, True)
    with pytest.raises(ValueError, match=r"\['mask_inputs'\]: this model has no mask-prompt input"):
        esam([{"image": ok, "original_size": (1500, 1000), "mask_inputs": torch.zeros(1, 1, 256, 256)}], True)
    # EfficientSAM stretches any size: no size limit
    esam([{"image": torch.zeros(3, 1200, 800), "original_size": (1200, 800)}], False)


def test_hq_model(photos):
    """HQ models: set_images and forward carry the per-image HQ features (one mask per prompt)."""
    model = randomize_(es.build_hq_model("sam_vit_b", encoder_global_attn_indexes=(0,), **SMALL), seed=13).eval()
    imgs = photos[:2]
    batched, single = es.SamPredictor(model), es.SamPredictor(model)
    with EncoderCalls(model) as calls:
        batched.set_images(imgs)
    assert calls.batches == [2]
    t = ResizeLongestSide(1024)
    for i, img in enumerate(imgs):
        single.set_image(img)
        prompt = _prompts(img.shape[:2], "sam")[1]
        for hq_only in (False, True):
            got = batched.predict_torch(**prompt, hq_token_only=hq_only, image_index=i)
            want = single.predict_torch(**prompt, hq_token_only=hq_only, return_logits=True)
            assert got[1].shape == (2, 1)
            assert rel_err(got[2], want[2]) <= REL and rel_err(got[1], want[1]) <= REL
            assert_masks_match(got[0], want[0])
            size = img.shape[:2]
            rec = dict(
                image=torch.as_tensor(t.apply_image(img)).permute(2, 0, 1).float(), original_size=size,
                point_coords=t.apply_coords_torch(prompt["point_coords"], size), point_labels=prompt["point_labels"],
                boxes=t.apply_boxes_torch(prompt["boxes"], size),
            )
            out = model([rec], True, hq_token_only=hq_only)[0]
            assert rel_err(out["low_res_logits"], want[2]) <= REL and rel_err(out["iou_predictions"], want[1]) <= REL
            assert_masks_match(out["masks"], want[0])
