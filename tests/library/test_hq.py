"""HQ-SAM: parity with the official `segment_anything_hq` package on identical random weights and real
photos, parameter counts, checkpoint loading (official files, merged exports, adapter-only), and the
predictor / esam-eval with HQ models."""

from __future__ import annotations

import importlib
import json
import warnings

import numpy as np
import pytest
import torch

import efficient_sam as es
from hq_adapter import adapter_state_dict, base_view, build_hq_model, save_adapter
from helpers import GRABCUT, PHOTOS, load_rgb, randomize_, rel_err

TOL = 1e-4

with warnings.catch_warnings():  # its TinyViT re-registers timm models on import
    warnings.simplefilter("ignore")
    hq_official = importlib.import_module("segment_anything_hq")
    _build_official = importlib.import_module("segment_anything_hq.build_sam")._build_sam

# name -> (our base, our overrides, official _build_sam kwargs or None for the registered vit_b, seed)
VARIANTS = {
    "vit_b": ("sam_vit_b", {}, None, 0),
    "vit_l_small": (
        "sam_vit_l", dict(encoder_embed_dim=64, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3)),
        dict(encoder_embed_dim=64, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=[1, 3]), 1,
    ),
    "vit_h_small": (
        "sam_vit_h", dict(encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(2, 3)),
        dict(encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=[2, 3]), 2,
    ),
}
# variant -> photo (vit_b full size runs on one photo only: 15-25 s per encoder pass on 2 cores)
CASES = [("vit_b", "truck"), ("vit_l_small", "sheep"), ("vit_h_small", "truck")]
IMAGES = {"truck": PHOTOS / "truck.jpg", "sheep": GRABCUT / "images" / "grabcut_sheep.jpg"}
PROMPTS = {
    "truck": {
        "box": dict(box=np.array([425.0, 600.0, 700.0, 875.0])),
        "point": dict(point_coords=np.array([[500.0, 375.0]]), point_labels=np.array([1])),
        "points_neg": dict(point_coords=np.array([[500.0, 375.0], [1125.0, 625.0], [575.0, 750.0]]),
                           point_labels=np.array([1, 1, 0])),
    },
    "sheep": {
        "box": dict(box=np.array([181.0, 180.0, 299.0, 376.0])),
        "point": dict(point_coords=np.array([[240.0, 278.0]]), point_labels=np.array([1])),
        "points_neg": dict(point_coords=np.array([[240.0, 278.0], [216.0, 249.0], [100.0, 50.0]]),
                           point_labels=np.array([1, 1, 0])),
    },
}


@pytest.fixture(scope="module")
def cache():
    return {}


def _pair(cache, variant, image):
    key = (variant, image)
    if key not in cache:
        base, over, official_kw, seed = VARIANTS[variant]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            official = hq_official.sam_model_registry["vit_b"]() if official_kw is None else _build_official(**official_kw)
        randomize_(official, seed=seed)
        official.eval()
        ours = build_hq_model(base, **over)
        ours.load_state_dict(official.state_dict())  # strict: the official key layout
        img = load_rgb(IMAGES[image])
        po, pu = hq_official.SamPredictor(official), es.SamPredictor(ours)
        po.set_image(img)
        pu.set_image(img)
        cache[key] = (po, pu)
    return cache[key]


@pytest.mark.parametrize("variant, image", CASES, ids=[f"{v}-{i}" for v, i in CASES])
@pytest.mark.parametrize("prompt", ["box", "point", "points_neg"])
@pytest.mark.parametrize("multimask", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("hq_only", [True, False], ids=["hq_only", "sam_plus_hq"])
def test_parity_with_official_hq_sam(cache, variant, image, prompt, multimask, hq_only):
    po, pu = _pair(cache, variant, image)
    kw = PROMPTS[image][prompt]
    o_masks, o_iou, o_low = po.predict(**kw, multimask_output=multimask, return_logits=True, hq_token_only=hq_only)
    masks, iou, low = pu.predict(**kw, multimask_output=multimask, hq_token_only=hq_only)
    assert low.shape == o_low.shape == (1, 256, 256) and iou.shape == o_iou.shape == (1,)  # 1 mask, also multimask
    assert rel_err(low, o_low) <= TOL and rel_err(iou, o_iou) <= TOL
    bad = (masks != (o_masks > 0)) & (np.abs(o_masks) > 1e-4)
    assert not bad.any()
    if prompt == "box" and not multimask:  # the image features, once per pair
        assert rel_err(pu.features, po.features) <= TOL
        assert rel_err(pu.hq_features, po.model.mask_decoder.embedding_encoder(po.features)
                       + po.model.mask_decoder.compress_vit_feat(po.interm_features[0].permute(0, 3, 1, 2))) <= TOL


def test_hq_token_changes_sam_outputs_and_the_options_differ(cache):
    """The HQ token sits in SAM's attention: the SAM part differs from a vanilla SAM with the same
    weights (as in the official model); multimask changes only the SAM part."""
    po, pu = _pair(cache, "vit_l_small", "sheep")
    kw = PROMPTS["sheep"]["box"]
    outs = {(m, h): pu.predict(**kw, multimask_output=m, hq_token_only=h)[2] for m in (True, False) for h in (True, False)}
    np.testing.assert_array_equal(outs[(True, True)], outs[(False, True)])  # HQ alone: no mask selection
    assert not np.allclose(outs[(True, False)], outs[(False, False)])
    assert not np.allclose(outs[(False, False)], outs[(False, True)])
    vanilla = es.build_model("sam_vit_l", **VARIANTS["vit_l_small"][1])
    sd = {k: v for k, v in pu.model.state_dict().items() if k in vanilla.state_dict()}
    vanilla.load_state_dict(sd)
    pv = es.SamPredictor(vanilla.eval())
    pv.set_image(load_rgb(IMAGES["sheep"]))
    sam_only = outs[(False, False)] - outs[(False, True)]  # SAM part of SAM + HQ
    vanilla_low = pv.predict(**kw, multimask_output=False)[2]
    assert not np.allclose(sam_only, vanilla_low, atol=1e-3)
    # base_view: the same vanilla model, sharing the HQ model's encoders
    view = base_view(pu.model)
    assert view.image_encoder is pu.model.image_encoder and not view.is_hq
    pb = es.SamPredictor(view)
    pb.set_image(load_rgb(IMAGES["sheep"]))
    np.testing.assert_array_equal(pb.predict(**kw, multimask_output=False)[2], vanilla_low)


def test_adapter_parameter_counts_match_the_reference_table():
    # hq_sam.md §1.6: added = 284,672 + 1024 C; totals of the official HQ models
    expect = {"sam_vit_b": (1_071_104, 94_806_576), "sam_vit_l": (1_333_248, 313_676_080), "sam_vit_h": (1_595_392, 642_686_000)}
    for base, (added, total) in expect.items():
        m = build_hq_model(base)
        assert sum(p.numel() for p in m.parameters() if p.requires_grad) == added
        assert sum(p.numel() for p in m.parameters()) == total
        assert m.config.hq.early_block == {"sam_vit_b": 2, "sam_vit_l": 5, "sam_vit_h": 7}[base]
    for base, width in (("efficient_sam_vitt", 192), ("efficient_sam_vits", 384)):
        m = build_hq_model(base, encoder_depth=3)
        assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 284_672 + 1024 * width
        assert m.config.hq.early_block == 2


def test_official_hq_file_loads_strictly_and_through_from_pretrained(tmp_path):
    base, over, official_kw, seed = VARIANTS["vit_l_small"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official = randomize_(_build_official(**official_kw), seed=7)
    torch.save(official.state_dict(), tmp_path / "sam_hq_small.pth")
    m = build_hq_model(base, checkpoint=tmp_path / "sam_hq_small.pth", **over)
    ref = official.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())
    m2 = es.from_pretrained(tmp_path / "sam_hq_small.pth", model="sam_vit_l", **over)
    assert isinstance(m2, es.Sam) and m2.is_hq and all(torch.equal(v, ref[k]) for k, v in m2.state_dict().items())
    # our merged export round-trips through from_pretrained as an HQ model
    m.save_pretrained(tmp_path / "merged")
    m3 = es.from_pretrained(tmp_path / "merged")
    assert m3.is_hq and m3.config.hq.early_block == 1 and all(torch.equal(v, ref[k]) for k, v in m3.state_dict().items())
    # a vanilla SAM file is not an HQ checkpoint, but it is a base checkpoint
    vanilla = es.build_model("sam_vit_l", **over)
    torch.save(vanilla.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(Exception, match=r"has no HQ adapter.*base_checkpoint="):
        build_hq_model(base, checkpoint=tmp_path / "plain.pth", **over)
    on_base = build_hq_model(base, base_checkpoint=tmp_path / "plain.pth", **over)
    assert torch.equal(on_base.image_encoder.pos_embed, vanilla.image_encoder.pos_embed)
    sd = official.state_dict()
    sd.pop("mask_decoder.hf_token.weight")  # a damaged HQ file: the missing key is named
    torch.save(sd, tmp_path / "damaged.pth")
    with pytest.raises(Exception, match=r"missing keys \(1\):\s+mask_decoder.hf_token.weight"):
        build_hq_model(base, checkpoint=tmp_path / "damaged.pth", **over)


def test_adapter_only_checkpoint_with_base_reference(tmp_path):
    over = dict(encoder_depth=3, encoder_img_size=256)
    base_model = randomize_(es.build_model("efficient_sam_vitt", **over), seed=1)
    base_model.save_pretrained(tmp_path / "base")
    hq = build_hq_model("efficient_sam_vitt", base_checkpoint=tmp_path / "base", **over)
    randomize_(hq.mask_decoder.hf_mlp, seed=2)
    save_adapter(hq, tmp_path / "adapter", {"base": "efficient_sam_vitt", "base_checkpoint": str(tmp_path / "base"),
                                            "overrides": over})
    assert len(adapter_state_dict(hq)) == 25
    assert (tmp_path / "adapter" / "adapter.safetensors").stat().st_size < 2.2e6  # 481,280 fp32 params
    meta = json.loads((tmp_path / "adapter" / "adapter.json").read_text())
    assert meta["base"] == "efficient_sam_vitt" and meta["early_block"] == 2
    back = build_hq_model("efficient_sam_vitt", checkpoint=tmp_path / "adapter")
    assert all(torch.equal(v, hq.state_dict()[k]) for k, v in back.state_dict().items())
    with pytest.raises(Exception, match="holds only the HQ adapter"):
        build_hq_model("efficient_sam_vitt", checkpoint=tmp_path / "adapter" / "adapter.safetensors", **over)


def test_efficient_sam_hq_predicts_and_esam_eval_scores_hq(tmp_path, asset_paths):
    over = dict(encoder_depth=3, encoder_img_size=256)
    hq = randomize_(build_hq_model("efficient_sam_vitt", **over), seed=3)
    p = es.SamPredictor(hq)
    img = load_rgb(asset_paths.photos / "hq_example6.png")  # RGBA
    p.set_image(img)
    m_hq, _, low_hq = p.predict(box=np.array([181.0, 196.0, 757.0, 495.0]), multimask_output=False, hq_token_only=True)
    m_both, _, low_both = p.predict(box=np.array([181.0, 196.0, 757.0, 495.0]), multimask_output=False)
    assert m_hq.shape == (1, *img.shape[:2]) and not np.allclose(low_hq, low_both)
    hq.save_pretrained(tmp_path / "m")
    from benchmarks.evaluate import main as esam_eval

    for flag in ([], ["--hq"]):
        out = tmp_path / f"e{len(flag)}.json"
        assert esam_eval(["--model", str(tmp_path / "m"), "--data", str(asset_paths.grabcut), "--limit", "2", "--json", str(out),
                          "--no-progress", *flag]) == 0
    a, b = (json.loads((tmp_path / f"e{i}.json").read_text()) for i in (0, 1))
    assert a["n"] == b["n"] == 2 and a["miou"] != b["miou"]
    with pytest.raises(SystemExit, match="--hq needs an HQ model"):
        esam_eval(["--model", "efficient_sam_vitt", "--set", "encoder_depth=1", "--data", str(asset_paths.grabcut), "--limit", "1",
                   "--hq", "--no-progress"])


def test_hq_bad_input_errors():
    with pytest.raises(ValueError, match="early_block 12 is not a block"):
        build_hq_model("efficient_sam_vitt", early_block=12)
    hq = build_hq_model("efficient_sam_vitt", encoder_depth=3, encoder_img_size=256)
    emb = torch.zeros(1, 256, 16, 16)
    with pytest.raises(ValueError, match="needs hq_features"):
        hq.decode(emb, boxes=torch.tensor([[1.0, 1.0, 50.0, 50.0]]))
    plain = es.build_model("efficient_sam_vitt", encoder_depth=1, encoder_img_size=256)
    with pytest.raises(ValueError, match="HQ models only"):
        plain.decode(emb, boxes=torch.tensor([[1.0, 1.0, 50.0, 50.0]]), hq_token_only=True)
