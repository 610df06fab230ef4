"""ONNX export (`efficient_sam.onnx.export`, `esam-export`) and the torch-free `OnnxSamPredictor`.

Models: small configs of each family (ViT depth 2, 256 px input, so a 16x16 embedding and 64x64
low-res masks) with realistic random weights (`randomize_`): SAM (built by the official
`segment_anything` and copied into ours, so the official ONNX decoder runs on identical weights),
EfficientSAM (exported with ONNX external data, forced, so that every parity test also covers that
path) and HQ-SAM on SAM. One full-size EfficientSAM-Ti (1024 px, the parity fixture's weights) is
`slow`. Images: the real photos of assets/photos.

Required: onnxruntime vs torch <= 1e-4 relative (max |a - b| / max |b|) on embeddings, low-res logits
and IoU; the full-resolution masks identical except where the torch logit is within NEAR of the
threshold. fp16 / int8 exports: their deviation and mask IoU against fp32 are printed and bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import efficient_sam as es
from efficient_sam import transforms
from helpers import PHOTOS, load_rgb, randomize_, rel_err

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from efficient_sam.onnx import ExportFormatError, OnnxSamPredictor  # noqa: E402
from efficient_sam.onnx.export import ExportError, export_model  # noqa: E402
from efficient_sam.tools import export as export_cli  # noqa: E402

TOL = 1e-4
NEAR = 1e-3  # |torch logit| below this (of a logit range ~10-100): float noise may flip the pixel
SMALL = dict(
    encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
    encoder_img_size=256,
)
ESAM_SMALL = dict(encoder_depth=2, encoder_img_size=256)


def _photo(name: str, longest: int | None = 640) -> np.ndarray:
    """A real photo, downscaled (PIL bilinear) to `longest` px to keep the full-resolution masks cheap."""
    image = load_rgb(PHOTOS / name)
    if longest is None:
        return image
    im = Image.fromarray(image)
    im.thumbnail((longest, longest), Image.BILINEAR)
    return np.array(im)


def _export_official(wrapper, dummy: dict, path):
    """The official `SamOnnxModel` (SAM or HQ) exported as `scripts/export_onnx_model.py` does: the
    inputs of `dummy` in order, a dynamic number of points, opset 17 -> `path`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, tuple(dummy.values()), str(path), input_names=list(dummy),
            output_names=["masks", "iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            opset_version=17, do_constant_folding=True, dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def photos():
    return {n: _photo(n) for n in ("dogs.jpg", "truck.jpg", "groceries.jpg")}  # 640x360, 640x427, 640x427


@pytest.fixture(scope="module")
def sam_pair():
    """(official segment_anything SAM, ours with its weights)."""
    from benchmarks.official import build_official

    cfg = es.get_config("sam_vit_b", **SMALL)
    official = randomize_(build_official(cfg), seed=2).eval()
    ours = es.Sam(cfg).eval()
    ours.load_state_dict(official.state_dict())
    return official, ours


@pytest.fixture(scope="module")
def models(sam_pair):
    return {
        "sam": sam_pair[1],
        "efficient_sam": randomize_(es.build_model("efficient_sam_vitt", **ESAM_SMALL), seed=3).eval(),
        "hq": randomize_(es.build_hq_model("sam_vit_b", **SMALL), seed=4).eval(),
    }


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    dirs = {}
    for name, model in models.items():
        dirs[name] = root / name
        export_model(model, dirs[name], external_data=(name == "efficient_sam"))
    return dirs


FAMILIES = ["sam", "efficient_sam", "hq"]


# ------------------------------------------------------------------------------------------------
# The files


def test_export_files_config_and_metadata(exports, models):
    for name, d in exports.items():
        cfg = json.loads((d / "config.json").read_text())
        model = models[name]
        assert cfg["family"] == model.config.family and cfg["decoder_family"] == model.config.decoder_family
        assert cfg["img_size"] == 256 and cfg["resize"] == model.config.resize
        assert cfg["pixel_mean"] == list(model.config.pixel_mean) and cfg["pixel_std"] == list(model.config.pixel_std)
        assert cfg["mask_threshold"] == 0.0 and cfg["opset"] == 17 and cfg["dtype"] == "fp32"
        assert cfg["hq"] == (name == "hq") and cfg["mask_input"] == (name != "efficient_sam")
        assert cfg["max_points"] == (6 if name == "efficient_sam" else None)
        for part in ("encoder", "decoder"):
            proto = onnx.load(str(d / f"{part}.onnx"), load_external_data=False)
            meta = {p.key: p.value for p in proto.metadata_props}
            assert meta["role"] == part and meta["family"] == model.config.family and meta["resize"] == model.config.resize
            assert [i.name for i in proto.graph.input] == cfg[part]["inputs"]
            assert [o.name for o in proto.graph.output] == cfg[part]["outputs"]
            onnx.checker.check_model(str(d / f"{part}.onnx"))
        dec = onnx.load(str(d / "decoder.onnx"), load_external_data=False)
        meta = {p.key: p.value for p in dec.metadata_props}
        if name == "efficient_sam":
            assert meta["mask_input"] == "false" and meta["max_points"] == "6" and "stretched" in meta["rules"]
            assert "mask_input" not in cfg["decoder"]["inputs"]
        else:
            official = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
            if name == "hq":
                official = official[:1] + ["interm_embeddings"] + official[1:] + ["multimask_output", "hq_token_only"]
            assert cfg["decoder"]["inputs"] == official
    # the external-data path (forced for the small EfficientSAM): weights beside the graph, read back
    d = exports["efficient_sam"]
    assert (d / "encoder.onnx.data").stat().st_size > 10 * (d / "encoder.onnx").stat().st_size
    assert (d / "decoder.onnx.data").is_file()
    assert not (exports["sam"] / "encoder.onnx.data").exists()


# ------------------------------------------------------------------------------------------------
# onnxruntime vs torch


def _session(d, part):
    return ort.InferenceSession(str(d / f"{part}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_matches_torch_on_photos_with_a_dynamic_batch(family, models, exports, photos):
    model = models[family]
    x = torch.cat([transforms.preprocess(photos[n], model.config) for n in ("dogs.jpg", "truck.jpg")])
    outs = _session(exports[family], "encoder").run(None, {"images": x.numpy()})
    with torch.no_grad():
        if model.is_hq:
            emb, early = model.encode_image_early(x)
            err_early = rel_err(outs[1][0], early)
            assert outs[1].shape == (1, 2, 16, 16, 64) and err_early <= TOL, err_early
        else:
            emb = model.encode_image(x)
    err = rel_err(outs[0], emb)
    print(f"{family} encoder rel err {err:.2e}")
    assert outs[0].shape == (2, 256, 16, 16) and err <= TOL


def _decoder_feeds(model, pred, coords, labels, boxes, mask, size, multimask=True):
    """Inputs of decoder.onnx for B prompts in original pixels (what OnnxSamPredictor builds for one)."""
    cfg = model.config
    parts_c, parts_l = [], []
    b = (coords if coords is not None else boxes).shape[0]
    if coords is not None:
        parts_c.append(transforms.transform_coords(coords, size, cfg))
        parts_l.append(labels.float())
    if boxes is not None:
        parts_c.append(transforms.transform_boxes(boxes, size, cfg).reshape(-1, 2, 2))
        parts_l.append(torch.tensor([[2.0, 3.0]]).expand(b, 2))
    if boxes is None and cfg.prompt_encoder.max_points is None:
        parts_c.append(torch.zeros(b, 1, 2))
        parts_l.append(-torch.ones(b, 1))
    feeds = {"image_embeddings": pred.features.numpy(), "point_coords": torch.cat(parts_c, 1).numpy(),
             "point_labels": torch.cat(parts_l, 1).numpy(), "orig_im_size": np.array(size, np.float32)}
    if cfg.prompt_encoder.mask_prompt:
        feeds["mask_input"] = (mask if mask is not None else torch.zeros(1, 1, 64, 64)).numpy()
        feeds["has_mask_input"] = np.array([float(mask is not None)], np.float32)
    if model.is_hq:
        with torch.no_grad():
            _, early = model.encode_image_early(transforms.preprocess(pred._image, cfg))
        feeds["interm_embeddings"] = early[None].numpy()
        feeds["multimask_output"] = np.array([float(multimask)], np.float32)
        feeds["hq_token_only"] = np.zeros(1, np.float32)
    return feeds


def _check_masks(ours: np.ndarray, logits: torch.Tensor, threshold: float = 0.0) -> int:
    """Boolean masks equal to `logits > threshold` except where |logit| < NEAR; -> number of such flips."""
    ref = logits.numpy() > threshold
    diff = ours != ref
    near = np.abs(logits.numpy() - threshold) < NEAR
    assert not (diff & ~near).any(), f"{int((diff & ~near).sum())} mask pixels differ away from the threshold"
    return int(diff.sum())


@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_matches_torch_for_several_prompts_at_once(family, models, exports, photos):
    """3 prompts per call (points; points + boxes; SAM also a mask input), multimask on and off, against
    `SamPredictor.predict_torch`, on a real photo."""
    model = models[family]
    image = photos["groceries.jpg"]
    h, w = image.shape[:2]
    pred = es.SamPredictor(model)
    pred.set_image(image)
    pred._image = image
    sess = _session(exports[family], "decoder")
    g = torch.Generator().manual_seed(0)
    coords = torch.rand(3, 2, 2, generator=g) * torch.tensor([w, h])
    labels = torch.tensor([[1, 1], [1, 0], [1, -1]]) if family != "efficient_sam" else torch.tensor([[1, 1], [1, 1], [1, -1]])
    boxes = torch.tensor([[10.0, 20, w / 2, h / 2], [w / 4, h / 4, w - 5, h - 5], [0, 0, w, h]])
    mask = torch.randn(3, 1, 64, 64, generator=g) * 5
    cases = [(coords, labels, None, None), (coords, labels, boxes, None), (None, None, boxes, None)]
    if family != "efficient_sam":
        cases.append((coords, labels, None, mask))
    worst = np.zeros(3)
    for c, lab, box, m in cases:
        for multimask in (True, False):
            with torch.no_grad():
                logits, iou, low = pred.predict_torch(c, lab, box, m, multimask_output=multimask, return_logits=True)
            feeds = _decoder_feeds(model, pred, c, lab, box, m, (h, w), multimask)
            masks, iou_o, low_o = sess.run(None, feeds)
            if not model.is_hq:
                sl = slice(1, None) if multimask else slice(0, 1)
                masks, iou_o, low_o = masks[:, sl], iou_o[:, sl], low_o[:, sl]
            e_low, e_iou, e_full = rel_err(low_o, low), rel_err(iou_o, iou), rel_err(masks, logits)
            assert masks.shape == tuple(logits.shape)
            assert e_low <= TOL and e_iou <= TOL and e_full <= TOL, (family, box is not None, m is not None, multimask, e_low, e_iou, e_full)
            _check_masks(masks > 0, logits)
            worst = np.maximum(worst, [e_low, e_iou, e_full])
    print(f"{family} decoder, 3 prompts per call: max rel err low-res {worst[0]:.2e}, IoU {worst[1]:.2e}, "
          f"full-res logits {worst[2]:.2e}")


def test_decoder_matches_the_official_onnx_decoder(sam_pair, exports, photos, tmp_path):
    """Our decoder.onnx vs the official `SamOnnxModel(return_single_mask=False)` exported as the official
    script does, on identical weights and identical inputs (points, boxes as labels 2/3, mask input)."""
    from segment_anything.utils.onnx import SamOnnxModel

    official, _ = sam_pair
    image = photos["dogs.jpg"]
    size = image.shape[:2]
    wrapper = SamOnnxModel(official, return_single_mask=False)
    dummy = {
        "image_embeddings": torch.randn(1, 256, 16, 16), "point_coords": torch.randint(0, 256, (1, 5, 2)).float(),
        "point_labels": torch.randint(0, 4, (1, 5)).float(), "mask_input": torch.randn(1, 1, 64, 64),
        "has_mask_input": torch.tensor([1.0]), "orig_im_size": torch.tensor([float(size[0]), float(size[1])]),
    }
    path = _export_official(wrapper, dummy, tmp_path / "official.onnx")
    theirs, ours = ort.InferenceSession(str(path)), _session(exports["sam"], "decoder")
    pred = OnnxSamPredictor(exports["sam"])
    pred.set_image(image)
    rng = np.random.default_rng(0)
    errs = []
    for labels, has_mask in (([1, -1], 0), ([1, 0, 1, -1], 0), ([2, 3], 0), ([1, 2, 3], 1), ([0, 1, -1], 1)):
        n = len(labels)
        feeds = {
            "image_embeddings": pred.features, "point_coords": (rng.random((1, n, 2)) * 250).astype(np.float32),
            "point_labels": np.array([labels], np.float32), "mask_input": rng.normal(0, 5, (1, 1, 64, 64)).astype(np.float32),
            "has_mask_input": np.array([has_mask], np.float32), "orig_im_size": np.array(size, np.float32),
        }
        a, b = ours.run(None, feeds), theirs.run(None, feeds)
        errs.append([rel_err(x, y) for x, y in zip(a, b)])
        assert all(e <= TOL for e in errs[-1]), (labels, errs[-1])
        # another image size: the official file has the export-time crop baked in (`int(...)` while tracing),
        # so compare with the official torch module instead
        feeds["orig_im_size"] = np.array([700.0, 500.0], np.float32)
        with torch.no_grad():
            ref = wrapper(*(torch.from_numpy(v) for v in feeds.values()))
        a = ours.run(None, feeds)
        errs.append([rel_err(x, y) for x, y in zip(a, ref)])
        assert all(e <= TOL for e in errs[-1]), (labels, errs[-1])
    print("vs official decoder (masks, iou, low-res): max rel err", np.max(errs, axis=0))


@pytest.mark.slow  # the official HQ builder fixes the 1024 input (a 64x64 embedding): ~25 s with the exports
def test_hq_decoder_matches_the_official_hq_onnx_decoder(tmp_path):
    """Our HQ decoder.onnx vs `segment_anything_hq.utils.onnx.SamOnnxModel` exported for its export-time
    flags, on identical weights, fed the official input layout (`interm_embeddings` = the stack of the 4
    global-block features, of which both use entry 0)."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build = importlib.import_module("segment_anything_hq.build_sam")._build_sam
        from segment_anything_hq.utils.onnx import SamOnnxModel

        official = build(encoder_embed_dim=64, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=[1, 3])
    randomize_(official, seed=1).eval()
    ours = es.build_hq_model(
        "sam_vit_l", encoder_embed_dim=64, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3)
    ).eval()
    ours.load_state_dict(official.state_dict())
    export_model(ours, tmp_path / "ours")
    sess = _session(tmp_path / "ours", "decoder")
    rng = np.random.default_rng(0)
    emb = rng.normal(0, 1, (1, 256, 64, 64)).astype(np.float32)
    interm = rng.normal(0, 1, (4, 1, 64, 64, 64)).astype(np.float32)
    for multimask, hq_only in ((True, False), (False, True)):
        wrapper = SamOnnxModel(official, hq_token_only=hq_only, multimask_output=multimask)
        dummy = {
            "image_embeddings": torch.from_numpy(emb), "interm_embeddings": torch.from_numpy(interm),
            "point_coords": torch.randint(0, 1024, (1, 5, 2)).float(), "point_labels": torch.randint(0, 4, (1, 5)).float(),
            "mask_input": torch.randn(1, 1, 256, 256), "has_mask_input": torch.tensor([1.0]),
            "orig_im_size": torch.tensor([300.0, 450.0]),
        }
        path = _export_official(wrapper, dummy, tmp_path / "official_hq.onnx")
        theirs = ort.InferenceSession(str(path))
        for labels, has_mask in (([1, -1], 0), ([1, 2, 3], 1)):
            feeds = {
                "image_embeddings": emb, "interm_embeddings": interm,
                "point_coords": (rng.random((1, len(labels), 2)) * 1000).astype(np.float32),
                "point_labels": np.array([labels], np.float32),
                "mask_input": rng.normal(0, 3, (1, 1, 256, 256)).astype(np.float32),
                "has_mask_input": np.array([has_mask], np.float32), "orig_im_size": np.array([300.0, 450.0], np.float32),
            }
            flags = {"multimask_output": np.array([float(multimask)], np.float32),
                     "hq_token_only": np.array([float(hq_only)], np.float32)}
            errs = [rel_err(a, b) for a, b in zip(sess.run(None, {**feeds, **flags}), theirs.run(None, feeds))]
            assert max(errs) <= TOL, (multimask, hq_only, labels, errs)


# ------------------------------------------------------------------------------------------------
# OnnxSamPredictor == SamPredictor


PROMPTS = [  # inside a 640 x 360 image
    dict(point_coords=[[520, 300]], point_labels=[1]),
    dict(point_coords=[[520, 300], [200, 150], [600, 340]], point_labels=[1, 0, 1]),
    dict(box=[60, 40, 600, 340]),
    dict(point_coords=[[400, 300]], point_labels=[1], box=[60, 40, 600, 340], multimask_output=False),
    dict(point_coords=[[400, 300], [10, 10]], point_labels=[1, -1], multimask_output=False),
]


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_predictor_equals_sam_predictor(family, models, exports, photos):
    model = models[family]
    image = photos["dogs.jpg"]
    torch_pred, onnx_pred = es.SamPredictor(model), OnnxSamPredictor(exports[family])
    torch_pred.set_image(image)
    onnx_pred.set_image(image)
    assert onnx_pred.original_size == torch_pred.original_size and onnx_pred.input_size == torch_pred.input_size
    assert rel_err(onnx_pred.get_image_embedding(), torch_pred.get_image_embedding()) <= TOL
    prompts = [dict(p) for p in PROMPTS]
    if family == "efficient_sam":
        prompts[1]["point_labels"] = [1, 1, 1]
    flips = 0
    for kw in prompts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logits, iou, low = torch_pred.predict(**kw, return_logits=True)
            masks_b, iou_b, low_b = torch_pred.predict(**kw)
        masks_o, iou_o, low_o = onnx_pred.predict(**kw)
        assert masks_o.dtype == np.bool_ and masks_o.shape == masks_b.shape and iou_o.shape == iou.shape
        assert np.abs(iou_o - iou).max() <= TOL and rel_err(low_o, low) <= TOL, kw
        flips += _check_masks(masks_o, torch.from_numpy(logits))
        logits_o, _, _ = onnx_pred.predict(**kw, return_logits=True)
        assert rel_err(logits_o, logits) <= TOL
        if family != "efficient_sam":  # the next click with the previous low-res logits as mask input
            best = low[int(np.argmax(iou))][None]
            ref, ref_iou, ref_low = torch_pred.predict(**kw, mask_input=best, return_logits=True)
            got, got_iou, got_low = onnx_pred.predict(**kw, mask_input=best, return_logits=True)
            assert rel_err(got, ref) <= TOL and np.abs(got_iou - ref_iou).max() <= TOL and rel_err(got_low, ref_low) <= TOL
    if family == "sam":  # a mask-only prompt (no sparse tokens at all)
        ref = torch_pred.predict(mask_input=low[:1], return_logits=True)
        got = onnx_pred.predict(mask_input=low[:1], return_logits=True)
        assert all(rel_err(g, r) <= TOL for g, r in zip(got, ref))
    if family == "hq":
        ref = torch_pred.predict(**PROMPTS[0], hq_token_only=True, return_logits=True)
        got = onnx_pred.predict(**PROMPTS[0], hq_token_only=True, return_logits=True)
        assert all(rel_err(g, r) <= TOL for g, r in zip(got, ref))
    print(f"{family}: {flips} near-threshold pixel flips")


def test_onnx_predictor_image_conversions_and_input_errors(models, exports, photos):
    """Grayscale / RGBA / BGR are converted as SamPredictor does; bad input gives SamPredictor's errors."""
    pred = OnnxSamPredictor(exports["sam"])
    image = photos["truck.jpg"]
    h, w = image.shape[:2]
    with pytest.raises(RuntimeError, match="no image is set"):
        pred.predict(point_coords=[[10, 10]], point_labels=[1])
    pred.set_image(image)
    emb = pred.get_image_embedding().copy()
    pred.set_image(np.concatenate([image, np.full((h, w, 1), 7, np.uint8)], axis=2))  # RGBA: alpha dropped
    assert np.array_equal(pred.get_image_embedding(), emb)
    pred.set_image(image[:, :, ::-1].copy(), image_format="BGR")
    assert np.array_equal(pred.get_image_embedding(), emb)
    gray = image[:, :, 1]
    ref = es.SamPredictor(models["sam"])
    ref.set_image(gray)
    pred.set_image(gray)
    assert rel_err(pred.get_image_embedding(), ref.get_image_embedding()) <= TOL
    for bad, err, match in [
        (image.astype(np.float32), TypeError, "uint8"), (image[:, :, :2], ValueError, "HxWx3"),
        (image.transpose(2, 0, 1), ValueError, "CxHxW"), ("photo.jpg", TypeError, "PIL.Image.open"),
    ]:
        with pytest.raises(err, match=match):
            pred.set_image(bad)
    pred.set_image(image)
    for kw, err, match in [
        (dict(point_coords=[[np.nan, 10]], point_labels=[1]), ValueError, "NaN"),
        (dict(point_coords=[[w + 5, 10]], point_labels=[1]), ValueError, "outside"),
        (dict(point_coords=[[10, 10]], point_labels=[2]), ValueError, "not valid for this model"),
        (dict(point_coords=[[10, 10]], point_labels=[0.5]), ValueError, "integers"),
        (dict(point_coords=[[10, 10]]), ValueError, "together"),
        (dict(box=[0, 0, w + 1, h]), ValueError, "box outside"),
        (dict(box=[50, 50, 10, 100]), ValueError, "inverted"),
        (dict(box=[1, 2, 3]), ValueError, "4 numbers"),
        (dict(mask_input=np.zeros((1, 32, 32))), ValueError, r"\(B, 1, 64, 64\)"),
        (dict(), ValueError, "no prompt"),
        (dict(point_coords=[[10, 10]], point_labels=[-1]), ValueError, "only padding"),
        (dict(point_coords=[[10, 10]], point_labels=[1], multimask_output="yes"), TypeError, "True or False"),
        (dict(point_coords=[[10, 10]], point_labels=[1], hq_token_only=True), ValueError, "HQ models only"),
    ]:
        with pytest.raises(err, match=match):
            pred.predict(**kw)
    esam = OnnxSamPredictor(exports["efficient_sam"])
    esam.set_image(image)
    with pytest.raises(ValueError, match="at most 6 points"):
        esam.predict(point_coords=[[10, 10]] * 5, point_labels=[1] * 5, box=[0, 0, 50, 50])
    with pytest.raises(ValueError, match="no mask-prompt input"):
        esam.predict(point_coords=[[10, 10]], point_labels=[1], mask_input=np.zeros((1, 64, 64)))
    with pytest.raises(ValueError, match="inverted box corners"):
        esam.predict(point_coords=[[50, 50], [10, 10]], point_labels=[2, 3])


def test_a_folder_that_is_not_an_export_is_a_clear_error(tmp_path, exports, models):
    with pytest.raises(ExportFormatError, match="not a folder"):
        OnnxSamPredictor(tmp_path / "missing")
    with pytest.raises(ExportFormatError, match="no config.json"):
        OnnxSamPredictor(tmp_path)
    saved = tmp_path / "saved"
    models["sam"].save_pretrained(saved)  # a model folder, not an export
    with pytest.raises(ExportFormatError, match="not an esam-export config"):
        OnnxSamPredictor(saved)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((exports["sam"] / "config.json").read_text())
    (broken / "encoder.onnx").write_bytes(b"not onnx")
    with pytest.raises(ExportFormatError, match="decoder file 'decoder.onnx' is missing"):
        OnnxSamPredictor(broken)
    (broken / "decoder.onnx").write_bytes(b"not onnx")
    with pytest.raises(ExportFormatError, match="onnxruntime cannot load it"):
        OnnxSamPredictor(broken)


# ------------------------------------------------------------------------------------------------
# fp16 / int8


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("variant", [dict(dtype="fp16"), dict(quantize="int8")], ids=["fp16", "int8"])
def test_fp16_and_int8_exports_stay_close_to_fp32(variant, models, exports, photos, tmp_path):
    d = tmp_path / "variant"
    cfg = export_model(models["sam"], d, **variant)
    assert cfg["dtype"] == variant.get("dtype", "fp32") and cfg["quantize"] == variant.get("quantize")
    fp32, low = OnnxSamPredictor(exports["sam"]), OnnxSamPredictor(d)
    emb_err, low_errs, iou_errs, mask_ious = [], [], [], []
    for name in ("dogs.jpg", "truck.jpg"):
        image = photos[name]
        fp32.set_image(image)
        low.set_image(image)
        emb_err.append(rel_err(low.features, fp32.features))
        for kw in PROMPTS[:4]:
            a, b = fp32.predict(**kw), low.predict(**kw)
            low_errs.append(rel_err(b[2], a[2]))
            iou_errs.append(float(np.abs(b[1] - a[1]).max()))
            mask_ious += [_mask_iou(x, y) for x, y in zip(b[0], a[0])]
    part = "encoder.onnx" if "quantize" in variant else "decoder.onnx"  # int8: the encoder only
    size = (d / part).stat().st_size / (exports["sam"] / part).stat().st_size
    print(f"{variant}: embedding rel err {max(emb_err):.2e}, low-res rel err {max(low_errs):.2e}, "
          f"IoU abs err {max(iou_errs):.2e}, mask IoU vs fp32 min {min(mask_ious):.4f} mean {np.mean(mask_ious):.4f}, "
          f"{part} size {size:.2f} x fp32")
    if "dtype" in variant:
        assert max(emb_err) < 5e-3 and max(low_errs) < 2e-2 and min(mask_ious) > 0.97 and size < 0.6
    else:
        ops = {n.op_type for n in onnx.load(str(d / "encoder.onnx")).graph.node}
        assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops and size < 1  # small model: mostly convs
        assert max(emb_err) < 5e-2 and max(low_errs) < 0.1 and min(mask_ious) > 0.9


# ------------------------------------------------------------------------------------------------
# Without torch


TORCH_FREE = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Block())
import numpy as np
from PIL import Image
from efficient_sam.onnx import OnnxSamPredictor
p = OnnxSamPredictor(sys.argv[1])
p.set_image(np.array(Image.open(sys.argv[2]).convert("RGB")))
masks, iou, low = p.predict(point_coords=[[520, 300]], point_labels=[1], box=[60, 40, 600, 340])
np.savez(sys.argv[3], masks=masks, iou=iou, low=low)
import efficient_sam
try:
    efficient_sam.build_model
except ImportError as e:
    print("needs torch" in str(e))
print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""


def test_onnx_predictor_works_where_torch_cannot_be_imported(exports, tmp_path):
    out = tmp_path / "out.npz"
    r = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(exports["hq"]), str(PHOTOS / "dogs.jpg"), str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["True", "[]"], r.stdout
    pred = OnnxSamPredictor(exports["hq"])
    pred.set_image(_photo("dogs.jpg", None))
    masks, iou, low = pred.predict(point_coords=[[520, 300]], point_labels=[1], box=[60, 40, 600, 340])
    with np.load(out) as got:
        assert np.array_equal(got["masks"], masks) and np.array_equal(got["iou"], iou)
        assert np.array_equal(got["low"], low)


# ------------------------------------------------------------------------------------------------
# esam-export


CLI_SMALL = ["--set", "encoder_depth=1", "--set", "encoder_embed_dim=32", "--set", "encoder_num_heads=1",
             "--set", "encoder_img_size=128", "--set", "encoder_global_attn_indexes=(0,)"]


def test_cli_exports_a_tiny_model(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert export_cli.main(["--model", "sam_vit_b", "--hq", "--out", str(out), "--opset", "18", *CLI_SMALL]) == 0
    printed = capsys.readouterr()
    assert "run in onnxruntime" in printed.out and "random weights" in printed.err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "decoder.onnx", "encoder.onnx"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "custom_sam+hq" and cfg["opset"] == 18 and cfg["hq"] and cfg["img_size"] == 128
    assert cfg["sam_config"]["image_encoder"]["depth"] == 1
    for part in ("encoder", "decoder"):
        proto = onnx.load(str(out / f"{part}.onnx"))
        assert proto.opset_import[0].version == 18
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["efficient_sam.format"] == "efficient_sam.onnx" and meta["hq"] == "true"
    pred = OnnxSamPredictor(out)
    pred.set_image(np.zeros((50, 80, 3), np.uint8))
    masks, iou, low = pred.predict(point_coords=[[40, 25]], point_labels=[1], multimask_output=False)
    assert masks.shape == (1, 50, 80) and iou.shape == (1,) and low.shape == (1, 32, 32)
    # a from_pretrained source (a save_pretrained folder): the config travels, no --set needed
    saved = tmp_path / "saved"
    es.build_model("efficient_sam_vitt", encoder_depth=1, encoder_img_size=128).save_pretrained(saved)
    assert export_cli.main(["--model", str(saved), "--out", str(tmp_path / "from_folder"), "--dtype", "fp16"]) == 0
    cfg = json.loads((tmp_path / "from_folder" / "config.json").read_text())
    assert cfg["family"] == "efficient_sam" and cfg["dtype"] == "fp16" and cfg["img_size"] == 128


def test_cli_bad_input_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something").write_text("x")
    cases = [
        (["--model", "sam_vit_q", "--out", str(tmp_path / "a")], "unknown model 'sam_vit_q'"),
        (["--model", "sam_vit_b", "--out", str(out)], "already exists and is not empty; pass --overwrite"),
        (["--model", "sam_vit_b", "--out", str(tmp_path / "b"), "--opset", "9"], "opset 9 is not supported"),
        (["--model", "sam_vit_b", "--out", str(tmp_path / "b"), "--opset", "99"], "opset 99 is not supported"),
        (["--model", "sam_vit_b", "--out", str(tmp_path / "b"), "--checkpoint", str(tmp_path / "none.pth")],
         "is not a file"),
        (["--model", "sam_vit_b", "--out", str(tmp_path / "b"), "--set", "encoder_deep=2"], "unknown override"),
        (["--model", "sam_vit_b", "--out", str(tmp_path / "b"), "--dtype", "fp16", "--quantize", "int8"],
         "applies to --dtype fp32"),
    ]
    for argv, msg in cases:
        assert export_cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("esam-export: error: ") and msg in err and "\n" not in err, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ExportError, match="opset 13 is not supported"):
        export_model(es.build_model("sam_vit_b", **SMALL), tmp_path / "c", opset=13)
    with pytest.raises(ExportError, match="dtype"):
        export_model(es.build_model("sam_vit_b", **SMALL), tmp_path / "c", dtype="bf16")


# ------------------------------------------------------------------------------------------------
# Full size


@pytest.mark.slow
def test_full_size_efficient_sam_vitt_matches_torch(efficient_sam_vitt_checkpoint, tmp_path, photos):
    """EfficientSAM-Ti at 1024 px with the parity fixture's weights: encoder, decoder and the predictor."""
    model = es.build_model("efficient_sam_vitt", checkpoint=efficient_sam_vitt_checkpoint)
    export_model(model, tmp_path / "vitt")
    torch_pred, onnx_pred = es.SamPredictor(model), OnnxSamPredictor(tmp_path / "vitt")
    image = _photo("dogs.jpg", None)  # 1072 x 603
    torch_pred.set_image(image)
    onnx_pred.set_image(image)
    e_emb = rel_err(onnx_pred.get_image_embedding(), torch_pred.get_image_embedding())
    assert e_emb <= TOL, e_emb
    for kw in (PROMPTS[0], dict(PROMPTS[1], point_labels=[1, 1, 1]), PROMPTS[2], PROMPTS[3]):
        logits, iou, low = torch_pred.predict(**kw, return_logits=True)
        masks_o, iou_o, low_o = onnx_pred.predict(**kw)
        print(f"full size: embeddings {e_emb:.2e}, low-res {rel_err(low_o, low):.2e}, IoU {rel_err(iou_o, iou):.2e}")
        assert rel_err(low_o, low) <= TOL and rel_err(iou_o, iou) <= TOL
        _check_masks(masks_o, torch.from_numpy(logits))
