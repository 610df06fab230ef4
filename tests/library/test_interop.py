"""Interoperability (issue 16 §4): transformers `SamHQModel` folders / Hub repos read by `es.from_pretrained`, and
`esam-convert --to official|transformers|timm`, each checked against the other library itself.

Oracles are the libraries, never our reader: transformers `SamModel` / `SamHQModel` / `SamVisionModel`
(`from_pretrained` of our output, `save_pretrained` of theirs, their forward outputs), the official
`segment_anything` / `segment_anything_hq` builders loading our `.pth` strictly, the official EfficientSAM file
itself (bit-identical round trip), and timm's `samvit` (`create_model` + `load_state_dict`, and `local-dir:`).
Models are small (2 blocks, width 64; 256 px where the other library allows it, 1024 px for the official
builders, which fix the input size) with `randomize_` weights, on a real photo.

transformers 5.24's SamHQModel mask decoder upscales the image embedding from *before* the two-way transformer
with H and W swapped (`image_embeddings.transpose(2, 3)` of the 4-D input, the updated keys discarded), which
the official HQ-SAM does not do; our HQ models follow the official one (test_hq.py). Its embeddings, early
features and IoU scores match ours; its masks match ours computed the same way (`_transformers_hq_masks`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import efficient_sam as es
from efficient_sam import transforms
from efficient_sam.checkpoint import detect_format
from efficient_sam.hub.interop import TRANSFORMERS_DEFAULTS, sam_config_from_transformers, transformers_config
from efficient_sam.tools import convert

from helpers import load_rgb, randomize_, rel_err

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

TOL = 1e-4
SMALL = dict(encoder_depth=2, encoder_embed_dim=64, encoder_num_heads=2, encoder_global_attn_indexes=(1,))
SMALL_256 = dict(SMALL, encoder_img_size=256)
SMALL_OFFICIAL = dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
POINTS = torch.tensor([[[400.0, 260.0], [120.0, 90.0]]])  # dog.jpg (800 x 534), original frame
LABELS = torch.tensor([[1, 0]])
BOX = torch.tensor([[250.0, 100.0, 600.0, 480.0]])


@pytest.fixture(scope="module")
def image(asset_paths):
    return load_rgb(asset_paths.photos / "dog.jpg")


def _hf_small(hq: bool, seed: int, decoder_eps: float = 1e-5):
    """A transformers SamModel / SamHQModel with our small test architecture, realistic random weights.
    `decoder_eps`: mask_decoder_config.layer_norm_eps, the eps of its two-way LayerNorms (SAM's: 1e-5,
    transformers' default: 1e-6)."""
    cls, cfg_cls = (transformers.SamHQModel, transformers.SamHQConfig) if hq else (transformers.SamModel, transformers.SamConfig)
    vision = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1], image_size=256)
    decoder = dict(layer_norm_eps=decoder_eps, **(dict(vit_dim=64) if hq else {}))
    model = cls(cfg_cls(vision_config=vision, prompt_encoder_config=dict(image_size=256), mask_decoder_config=decoder))
    return randomize_(model, seed=seed).eval()


def _prompts(cfg, image):
    size = image.shape[:2]
    return (transforms.transform_coords(POINTS, size, cfg), LABELS, transforms.transform_boxes(BOX, size, cfg))


def _transformers_hq_masks(ours: es.Sam, emb, hq_features, sparse, dense):
    """Our HQ decoder with transformers 5.24's upscaling input: the embedding before the two-way transformer
    (+ dense prompt), H and W swapped. -> SAM's 4 mask logits and the HQ logits (B, 5, 4h, 4w)."""
    md = ours.mask_decoder
    hs, _ = md.run_transformer(emb, ours.prompt_encoder.get_dense_pe(), sparse, dense, md.hf_token.weight)
    return md.mask_logits(hs, (emb + dense).transpose(2, 3).contiguous(), hq_features), md.iou_prediction_head(hs[:, 0])


def _compare_with_transformers(ours: es.Sam, theirs, image, tol: float = TOL, quick: bool = False) -> dict[str, float]:
    """Forward outputs of `theirs` (transformers) vs ours on the same preprocessed photo and prompts ->
    the relative errors; asserts each <= tol. One vision-encoder pass; the decoder runs on its outputs.
    `quick`: point prompts with multimask output only."""
    x = transforms.preprocess(image, ours.config)
    pts, labels, box = _prompts(ours.config, image)
    errs = {}
    with torch.no_grad():
        vision = theirs.vision_encoder(x)
        if ours.is_hq:
            emb, early = ours.encode_image_early(x)
            hq_features = ours.mask_decoder.hq_features(emb, early)
            errs["early_feature"] = rel_err(early, vision.intermediate_embeddings[0])
        else:
            emb = ours.encode_image(x)
        errs["embedding"] = rel_err(emb, vision.last_hidden_state)
        for name, prompt, hf_prompt in (
            ("points", dict(point_coords=pts, point_labels=labels), dict(input_points=pts[None], input_labels=labels[None])),
            ("box", dict(boxes=box), dict(input_boxes=box[None])),
        )[: 1 if quick else 2]:
            for multimask in (True,) if quick else (True, False):
                for hq_only in ((False, True) if ours.is_hq else (False,)):
                    hq_kw = dict(hq_token_only=hq_only, intermediate_embeddings=vision.intermediate_embeddings) if ours.is_hq else {}
                    out = theirs(image_embeddings=vision.last_hidden_state, multimask_output=multimask, **hf_prompt, **hq_kw)
                    tag = f"{name}{'_multi' if multimask else ''}{'_hq_only' if hq_only else ''}"
                    if not ours.is_hq:
                        low, iou = ours.decode(emb, **prompt, multimask_output=multimask)
                        errs[f"{tag}_logits"] = rel_err(low, out.pred_masks[0])
                        errs[f"{tag}_iou"] = rel_err(iou, out.iou_scores[0])
                        continue
                    low, iou = ours.decode(emb, **prompt, multimask_output=multimask, hq_features=hq_features,
                                           hq_token_only=hq_only)
                    # transformers sorts the 3 multimask outputs by IoU: its first is the official one
                    errs[f"{tag}_iou"] = rel_err(iou[:, 0], out.iou_scores[0, :, 0])
                    sparse, dense = ours.prompt_encoder(prompt.get("point_coords"), prompt.get("point_labels"),
                                                        prompt.get("boxes"), None, batch_size=1)
                    masks, iou_all = _transformers_hq_masks(ours, emb, hq_features, sparse, dense)
                    best = 1 + int(iou_all[0, 1:4].argmax()) if multimask else 0
                    expect = masks[:, 4] if hq_only else masks[:, best] + masks[:, 4]
                    errs[f"{tag}_logits"] = min(rel_err(expect, out.pred_masks[0, :, 0]),  # transformers 5.24
                                                rel_err(low[:, 0], out.pred_masks[0, :, 0]))  # if fixed upstream
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, bad
    return errs


def _hub_repo(root: Path, repo_id: str, folder: Path) -> None:
    """`folder`'s files as `repo_id` in a huggingface_hub cache layout (blobs, snapshots/<sha>, refs/main)."""
    sha = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / sha).mkdir(parents=True)
    for f in sorted(folder.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(f"{sha}/{f.name}".encode()).hexdigest()
        blob.write_bytes(f.read_bytes())
        (repo / "snapshots" / sha / f.name).symlink_to(os.path.relpath(blob, repo / "snapshots" / sha))


def _save_ours(model, path: Path) -> Path:
    model.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------
# transformers SamHQModel -> es.from_pretrained


def test_samhq_folder_saved_by_transformers_reproduces_transformers(tmp_path, image):
    theirs = _hf_small(hq=True, seed=3)
    theirs.save_pretrained(tmp_path / "hf")  # its own writer: the tied prompt-encoder copy left out
    model, info = es.hub.load_with_info(tmp_path / "hf")
    assert info["format"] == "transformers_hq" and info["architecture"].startswith("HQ-SAM on")
    assert isinstance(model, es.Sam) and model.is_hq and not model.training
    assert model.config.hq.early_block == 1 and model.config.image_encoder.img_size == 256  # from its config.json
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(es.hq.adapter_state_dict(model))
    errs = _compare_with_transformers(model, transformers.SamHQModel.from_pretrained(tmp_path / "hf").eval(), image)
    assert errs["embedding"] == 0.0 and errs["early_feature"] == 0.0
    # the same file also loads as an HQ checkpoint of build_hq_model
    hq = es.build_hq_model("sam_vit_b", checkpoint=tmp_path / "hf" / "model.safetensors", **SMALL_256)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in hq.state_dict().items())
    # transformers' default decoder eps (1e-6; what its converter writes) vs SAM's 1e-5: measured 2.0e-4
    default = _hf_small(hq=True, seed=3, decoder_eps=1e-6)
    default.save_pretrained(tmp_path / "hf_default")
    _compare_with_transformers(es.from_pretrained(tmp_path / "hf_default"), default, image, tol=1e-3, quick=True)


def test_samhq_hub_repo_offline(tmp_path, monkeypatch, image):
    import huggingface_hub.constants as constants

    theirs = _hf_small(hq=True, seed=4)
    theirs.save_pretrained(tmp_path / "hf")
    _hub_repo(tmp_path / "hub", "syscv-community/sam-hq-vit-base", tmp_path / "hf")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model, info = es.hub.load_with_info("syscv-community/sam-hq-vit-base")
    assert info["source"] == "syscv-community/sam-hq-vit-base/model.safetensors@main"
    assert info["format"] == "transformers_hq" and model.is_hq
    _compare_with_transformers(model, theirs, image)
    # model= with overrides instead of its config.json: the same architecture
    again = es.from_pretrained("syscv-community/sam-hq-vit-base", model="sam_vit_b", **SMALL_256)
    assert again.config == model.config


def test_samhq_config_mismatch_and_unsupported_configs(tmp_path):
    theirs = _hf_small(hq=True, seed=5)
    theirs.save_pretrained(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["vision_config"]["hidden_act"] = "relu"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(es.hub.UnsupportedCheckpointError, match=r"vision_config\.hidden_act = 'relu'"):
        es.from_pretrained(tmp_path / "hf")
    cfg["vision_config"]["hidden_act"] = "gelu"
    cfg["model_type"] = "sam"  # a SamModel config with SamHQModel weights
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(es.checkpoint.CheckpointError, match="describes a transformers SamModel, but the weights"):
        es.from_pretrained(tmp_path / "hf")


def test_transformers_config_translation_against_transformers():
    """Our defaults are transformers' own; the registered SAM configs round-trip through transformers' classes."""
    for name, cls in (("vision_config", transformers.SamVisionConfig), ("prompt_encoder_config", transformers.SamPromptEncoderConfig),
                      ("mask_decoder_config", transformers.SamMaskDecoderConfig)):
        theirs = cls().to_dict()
        assert {k: theirs[k] for k in TRANSFORMERS_DEFAULTS[name] if k != "mlp_dim"} == {
            k: v for k, v in TRANSFORMERS_DEFAULTS[name].items() if k != "mlp_dim"}, name
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h"):
        cfg = es.get_config(name)
        theirs = transformers.SamConfig(**{k: v for k, v in transformers_config(cfg).items() if k.endswith("_config")})
        assert sam_config_from_transformers(theirs.to_dict()) == cfg
        hq = es.registry.with_hq(cfg)
        theirs = transformers.SamHQConfig(**{k: v for k, v in transformers_config(hq).items() if k.endswith("_config")})
        assert sam_config_from_transformers(theirs.to_dict()) == hq
    assert sam_config_from_transformers(transformers.SamConfig().to_dict()) == es.get_config("sam_vit_b")


# ------------------------------------------------------------------------------------------------
# esam-convert --to transformers


def test_convert_sam_to_transformers_sammodel(tmp_path, image, capsys):
    ours = randomize_(es.build_model("sam_vit_b", **SMALL_256), seed=6).eval()
    assert convert.main([str(_save_ours(ours, tmp_path / "ours")), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    assert "transformers SamModel" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
    theirs, loading = transformers.SamModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(loading[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), loading
    errs = _compare_with_transformers(ours, theirs.eval(), image)
    assert max(errs.values()) == 0.0, errs  # same ops, same order
    # an image encoder alone -> SamVisionModel
    ours.image_encoder.save_pretrained(tmp_path / "enc")
    assert convert.main([str(tmp_path / "enc"), str(tmp_path / "hf_enc"), "--to", "transformers"]) == 0
    vision = transformers.SamVisionModel.from_pretrained(tmp_path / "hf_enc").eval()
    x = transforms.preprocess(image, ours.config)
    with torch.no_grad():
        assert rel_err(ours.encode_image(x), vision(x).last_hidden_state) <= TOL
    assert detect_format(es.checkpoint.read_state_dict(tmp_path / "hf_enc" / "model.safetensors")) == "transformers"


def test_convert_hq_to_transformers_samhqmodel(tmp_path, image):
    ours = randomize_(es.build_hq_model("sam_vit_b", **SMALL_256), seed=7).eval()
    assert convert.main([str(_save_ours(ours, tmp_path / "ours")), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    theirs, loading = transformers.SamHQModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(loading[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), loading
    assert theirs.config.mask_decoder_config.vit_dim == 64
    _compare_with_transformers(ours, theirs.eval(), image)
    # an early block transformers would not fuse: a clear error
    other = es.build_hq_model("sam_vit_b", early_block=0, **SMALL_256)
    _save_ours(other, tmp_path / "early0")
    assert convert.main([str(tmp_path / "early0"), str(tmp_path / "hf0"), "--to", "transformers"]) == 1


# ------------------------------------------------------------------------------------------------
# esam-convert --to official


def test_convert_to_official_sam_and_hq_load_in_official_packages(tmp_path, image):
    from segment_anything import SamPredictor
    from segment_anything.build_sam import _build_sam

    pts, labels, box = POINTS[0].numpy(), LABELS[0].numpy(), BOX[0].numpy()
    ours = randomize_(es.build_model("sam_vit_b", **SMALL), seed=8).eval()
    assert convert.main([str(_save_ours(ours, tmp_path / "sam")), str(tmp_path / "off"), "--to", "official"]) == 0
    official = _build_sam(**SMALL_OFFICIAL)
    official.load_state_dict(torch.load(tmp_path / "off" / "sam_custom.pth", weights_only=True))  # strict
    po, pu = SamPredictor(official.eval()), es.SamPredictor(ours)
    po.set_image(image)
    pu.set_image(image)
    assert rel_err(pu.get_image_embedding(), po.get_image_embedding()) <= TOL
    for kw in (dict(point_coords=pts, point_labels=labels, multimask_output=True), dict(box=box, multimask_output=False)):
        (_, iou_o, low_o), (_, iou_u, low_u) = po.predict(**kw), pu.predict(**kw)
        assert rel_err(low_u, low_o) <= TOL and rel_err(iou_u, iou_o) <= TOL

    with warnings.catch_warnings():  # its TinyViT re-registers timm models on import
        warnings.simplefilter("ignore")
        hq_pkg = importlib.import_module("segment_anything_hq")
        hq_build = importlib.import_module("segment_anything_hq.build_sam")._build_sam
    hq = randomize_(es.build_hq_model("sam_vit_b", **SMALL), seed=9).eval()
    out = tmp_path / "sam_hq_small.pth"
    assert convert.main([str(_save_ours(hq, tmp_path / "hq")), str(out), "--to", "official"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official_hq = hq_build(**SMALL_OFFICIAL)
    official_hq.load_state_dict(torch.load(out, weights_only=True))
    po, pu = hq_pkg.SamPredictor(official_hq.eval()), es.SamPredictor(hq)
    po.set_image(image)
    pu.set_image(image)
    for hq_only in (False, True):
        _, iou_o, low_o = po.predict(box=box, multimask_output=False, return_logits=True, hq_token_only=hq_only)
        _, iou_u, low_u = pu.predict(box=box, multimask_output=False, hq_token_only=hq_only)
        assert rel_err(low_u, low_o) <= TOL and rel_err(iou_u, iou_o) <= TOL


def test_convert_efficient_sam_official_round_trip_is_bit_identical(tmp_path, efficient_sam_vitt_checkpoint,
                                                                    efficient_sam_vitt_sd):
    assert convert.main([str(efficient_sam_vitt_checkpoint), str(tmp_path / "ours")]) == 0
    assert convert.main([str(tmp_path / "ours"), str(tmp_path / "off"), "--to", "official"]) == 0
    written = torch.load(tmp_path / "off" / "efficient_sam_vitt.pt", weights_only=True)
    assert list(written) == ["model"] and set(written["model"]) == set(efficient_sam_vitt_sd)
    for k, v in efficient_sam_vitt_sd.items():
        assert written["model"][k].dtype == v.dtype and torch.equal(written["model"][k], v), k


# ------------------------------------------------------------------------------------------------
# esam-convert --to timm


def test_convert_sam_encoder_to_timm_samvit(tmp_path, image):
    assert "samvit_base_patch16" in timm.list_models("samvit*")
    ours = randomize_(es.build_model("sam_vit_b", **SMALL_256), seed=10).eval()
    _save_ours(ours, tmp_path / "ours")
    assert convert.main([str(tmp_path / "ours"), str(tmp_path / "timm"), "--to", "timm"]) == 0
    assert convert.main([str(tmp_path / "ours"), str(tmp_path / "enc.safetensors"), "--to", "timm"]) == 0
    args = json.loads((tmp_path / "timm" / "config.json").read_text())["model_args"]
    from safetensors.torch import load_file

    x = transforms.preprocess(image, ours.config)
    with torch.no_grad():
        emb = ours.encode_image(x)
        # timm's samvit blocks use nn.LayerNorm's eps 1e-5 (SAM: 1e-6); with SAM's eps the features are exact
        exact = timm.create_model("samvit_base_patch16", pretrained=False, num_classes=0,
                                  norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **args).eval()
        exact.load_state_dict(load_file(str(tmp_path / "enc.safetensors")))  # strict
        assert rel_err(emb, exact.forward_features(x)) <= TOL
        default = timm.create_model("local-dir:" + str(tmp_path / "timm"), pretrained=True).eval()
        assert rel_err(emb, default.forward_features(x)) <= 2e-3  # measured 3.4e-4: timm's eps, not the weights


# ------------------------------------------------------------------------------------------------
# errors


def test_impossible_conversions_are_clear_errors(tmp_path, capsys):
    tiny = dict(encoder_depth=1, encoder_embed_dim=32, encoder_num_heads=1, encoder_img_size=256)
    esam = _save_ours(es.build_model("efficient_sam_vitt", **tiny), tmp_path / "esam")
    esam_hq = _save_ours(es.build_hq_model("efficient_sam_vitt", early_block=0, **tiny), tmp_path / "esam_hq")
    encoder = tmp_path / "enc"
    es.build_model("sam_vit_b", **SMALL_256).image_encoder.save_pretrained(encoder)
    cases = [
        (esam, "transformers", "transformers has no EfficientSAM model"),
        (esam, "timm", "EfficientSAM's encoder .* is not a samvit model"),
        (esam_hq, "official", "an HQ model on EfficientSAM has no official checkpoint layout"),
        (esam_hq, "transformers", "transformers has no EfficientSAM model"),
        (encoder, "official", "an image encoder alone has no official"),
    ]
    for src, to, pattern in cases:
        assert convert.main([str(src), str(tmp_path / f"out_{to}"), "--to", to]) == 1, (src, to)
        err = capsys.readouterr().err
        assert err.startswith("esam-convert: error:") and __import__("re").search(pattern, err), err


def test_bad_convert_input(tmp_path, capsys, asset_paths):
    ours = _save_ours(es.build_model("sam_vit_b", **SMALL_256), tmp_path / "ours")
    with pytest.raises(SystemExit) as e:
        convert.main([str(ours), str(tmp_path / "x"), "--to", "onnx"])
    assert e.value.code == 2 and "invalid choice: 'onnx'" in capsys.readouterr().err
    for to, out in (("official", tmp_path / "m.pth"), ("transformers", tmp_path / "hf"), ("timm", tmp_path / "timm")):
        assert convert.main([str(ours), str(out), "--to", to]) == 0
        capsys.readouterr()
        assert convert.main([str(ours), str(out), "--to", to]) == 2  # exists
        assert "--overwrite" in capsys.readouterr().err
        assert convert.main([str(ours), str(out), "--to", to, "--overwrite"]) == 0
    # official into a folder: the default file name is checked too
    assert convert.main([str(ours), str(tmp_path / "dir"), "--to", "official"]) == 0
    assert convert.main([str(ours), str(tmp_path / "dir"), "--to", "official"]) == 2
    # sources that are not models
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "empty").mkdir()
    for src, pattern in ((asset_paths.photos / "dog.jpg", "could not read checkpoint"),
                         (tmp_path / "notes.txt", "could not read checkpoint"),
                         (tmp_path / "empty", "holds no checkpoint")):
        assert convert.main([str(src), str(tmp_path / "o"), "--to", "transformers"]) == 1
        assert pattern in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
