"""Hub checkpoints: `from_pretrained`, `save_pretrained`/`push_to_hub`, `esam-convert` — all offline.

A module fixture lays out a Hugging Face cache (`models--org--name/refs/main`, `snapshots/<sha>/...`,
blobs + symlinks) holding random-weight files in every official format under the real repo ids and
file names; `offline_hub` points huggingface_hub at it with HF_HUB_OFFLINE=1. Oracles are independent
of our code: the official `segment_anything` (and `segment_anything_hq`) packages, the bundled
EfficientSAM fixture (official code's outputs), timm's own SAM->timm key filter, and a copy of
transformers' `convert_sam_to_hf.py` renaming. SAM files use a small encoder (64 wide, 2 blocks)
except one full-size ViT-B file (architecture inferred from shapes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import pickle
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import efficient_sam as es
from efficient_sam.checkpoint import KNOWN_FORMATS, CheckpointError, to_efficient_sam_layout
from efficient_sam.hub import CheckpointNotFoundError, NotCachedError, UnsupportedCheckpointError
from efficient_sam.modeling.image_encoder import ImageEncoderViT
from efficient_sam.tools import convert

from helpers import load_rgb, randomize_, rel_err

TOL = 1e-4
# Small SAM encoder for fast tests (our override names / the official builder's argument names).
SMALL = dict(encoder_depth=2, encoder_embed_dim=64, encoder_num_heads=2, encoder_global_attn_indexes=(1,))
SMALL_OFFICIAL = dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
POINTS = np.array([[400.0, 260.0], [120.0, 90.0]])
LABELS = np.array([1, 0])
BOX = np.array([250.0, 100.0, 600.0, 480.0])

REPO_SAM = "ybelkada/segment-anything"
REPO_ESAM = "yunyangx/EfficientSAM"
REPO_HQ = "lkeab/hq-sam"
REPO_HF_B = "facebook/sam-vit-base"
REPO_HF_L = "facebook/sam-vit-large"
REPO_TIMM = "timm/samvit_base_patch16.sa1b"
REPO_OURS = "esam-org/sam-small"


# ------------------------------------------------------------------------------------------------
# Independent renamings (copies of the third-party converters, not our code)


def official_to_transformers(sd: dict) -> dict:
    """transformers' convert_sam_to_hf.py `replace_keys` (KEYS_TO_MODIFY_MAPPING + hypernetwork MLPs)."""
    mapping = {
        "iou_prediction_head.layers.0": "iou_prediction_head.proj_in",
        "iou_prediction_head.layers.1": "iou_prediction_head.layers.0",
        "iou_prediction_head.layers.2": "iou_prediction_head.proj_out",
        "mask_decoder.output_upscaling.0": "mask_decoder.upscale_conv1",
        "mask_decoder.output_upscaling.1": "mask_decoder.upscale_layer_norm",
        "mask_decoder.output_upscaling.3": "mask_decoder.upscale_conv2",
        "mask_downscaling.0": "mask_embed.conv1",
        "mask_downscaling.1": "mask_embed.layer_norm1",
        "mask_downscaling.3": "mask_embed.conv2",
        "mask_downscaling.4": "mask_embed.layer_norm2",
        "mask_downscaling.6": "mask_embed.conv3",
        "point_embeddings": "point_embed",
        "pe_layer.positional_encoding_gaussian_matrix": "shared_embedding.positional_embedding",
        "image_encoder": "vision_encoder",
        "neck.0": "neck.conv1",
        "neck.1": "neck.layer_norm1",
        "neck.2": "neck.conv2",
        "neck.3": "neck.layer_norm2",
        "patch_embed.proj": "patch_embed.projection",
        ".norm": ".layer_norm",
        "blocks": "layers",
    }
    out = {}
    pattern = r".*.output_hypernetworks_mlps.(\d+).layers.(\d+).*"
    for key, value in sd.items():
        for old, new in mapping.items():
            if old in key:
                key = key.replace(old, new)
        if m := re.match(pattern, key):
            layer = int(m.group(2))
            key = key.replace(f"layers.{layer}", {0: "proj_in", 1: "layers.0", 2: "proj_out"}[layer])
        out[key] = value
    out["shared_image_embedding.positional_embedding"] = out["prompt_encoder.shared_embedding.positional_embedding"]
    return out


def official_to_timm(sd: dict) -> dict:
    from timm.models.vision_transformer_sam import checkpoint_filter_fn

    return checkpoint_filter_fn(sd, None)


# ------------------------------------------------------------------------------------------------
# Hand-built Hugging Face cache


class FakeHub:
    """Writes repos in the huggingface_hub cache layout: blobs/, snapshots/<sha>/<file> (relative
    symlinks into blobs/), refs/<branch> = sha."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, repo_id: str, files: dict, ref: str = "main") -> str:
        sha = hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest()
        repo = self.root / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(sha)
        (repo / "blobs").mkdir(exist_ok=True)
        for name, content in files.items():
            blob = repo / "blobs" / hashlib.sha256(f"{sha}/{name}".encode()).hexdigest()
            if isinstance(content, Path):
                os.link(content, blob)  # same tmp filesystem: no copy of the big files
            elif isinstance(content, dict):
                blob.write_text(json.dumps(content))
            else:
                blob.write_bytes(content)
            dest = repo / "snapshots" / sha / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(os.path.relpath(blob, dest.parent))
        return sha

    def path(self, repo_id: str, filename: str, ref: str = "main") -> Path:
        repo = self.root / ("models--" + repo_id.replace("/", "--"))
        return repo / "snapshots" / (repo / "refs" / ref).read_text() / filename


def official_small_sam(seed: int = 1):
    from segment_anything.build_sam import _build_sam

    return randomize_(_build_sam(**SMALL_OFFICIAL), seed=seed).eval()


@pytest.fixture(scope="module")
def assets(tmp_path_factory, asset_paths, efficient_sam_vitt_sd):
    """Source files and the hub cache, built once per module."""
    tmp = tmp_path_factory.mktemp("hub_assets")
    a = {"tmp": tmp}

    # official segment_anything: a small model (parity) and a full-size ViT-B (shape inference)
    small = official_small_sam()
    a["small_sd"] = {k: v.clone() for k, v in small.state_dict().items()}
    torch.save(small.state_dict(), tmp / "sam_small.pth")
    from segment_anything import SamPredictor, sam_model_registry

    image = load_rgb(asset_paths.photos / "dog.jpg")  # 800 x 534
    pred = SamPredictor(small)
    pred.set_image(image)
    a["image"] = image
    a["official"] = {
        "embedding": pred.get_image_embedding().clone(),
        "points": pred.predict(point_coords=POINTS, point_labels=LABELS, multimask_output=True),
        "box": pred.predict(box=BOX, multimask_output=False),
    }
    full = randomize_(sam_model_registry["vit_b"](), seed=2).eval()
    torch.save(full.state_dict(), tmp / "sam_vit_b_full.pth")
    a["full_b"] = full

    # official EfficientSAM ViT-Ti fixture as the published .pt ({"model": sd}), and a random ViT-S
    torch.save({"model": efficient_sam_vitt_sd}, tmp / "efficient_sam_vitt.pt")
    vits = randomize_(es.build_model("efficient_sam_vits"), seed=3)
    a["vits_sd"] = vits.state_dict()
    torch.save({"model": to_efficient_sam_layout(vits.state_dict())}, tmp / "efficient_sam_vits.pt")

    # HQ-SAM (official segment_anything_hq builder, small)
    with warnings.catch_warnings():  # its TinyViT re-registers timm models on import
        warnings.simplefilter("ignore")
        hq_builder = importlib.import_module("segment_anything_hq.build_sam")._build_sam
    hq = randomize_(hq_builder(**SMALL_OFFICIAL), seed=4)
    torch.save(hq.state_dict(), tmp / "sam_hq_small.pth")

    # transformers SamModel (safetensors + a pytorch_model.bin-only repo) and timm samvit
    hf = official_to_transformers(a["small_sd"])
    save_file({k: v.clone() for k, v in hf.items()}, str(tmp / "hf.safetensors"))  # tied copy: own storage
    torch.save(hf, tmp / "hf.bin")
    hf_config = {"model_type": "sam", "architectures": ["SamModel"], "vision_config": {"hidden_size": 64}}
    save_file(official_to_timm(a["small_sd"]), str(tmp / "timm.safetensors"))
    timm_config = {"architecture": "samvit_base_patch16", "num_classes": 0, "pretrained_cfg": {"tag": "sa1b"}}

    # our own format
    ours = randomize_(es.build_model("efficient_sam_vitt", encoder_depth=2), seed=5)
    ours.save_pretrained(tmp / "ours")
    a["ours"] = ours

    hub = FakeHub(tmp / "hub")
    hub.add(REPO_SAM, {
        "checkpoints/sam_vit_b_01ec64.pth": tmp / "sam_vit_b_full.pth",
        "checkpoints/sam_vit_l_0b3195.pth": tmp / "sam_small.pth",
    })
    hub.add(REPO_ESAM, {"efficient_sam_vitt.pt": tmp / "efficient_sam_vitt.pt",
                        "efficient_sam_vits.pt": tmp / "efficient_sam_vits.pt"})
    hub.add(REPO_HQ, {"sam_hq_vit_b.pth": tmp / "sam_hq_small.pth"})
    hub.add(REPO_HF_B, {"config.json": hf_config, "model.safetensors": tmp / "hf.safetensors"})
    hub.add(REPO_HF_L, {"config.json": hf_config, "pytorch_model.bin": tmp / "hf.bin"})
    hub.add(REPO_TIMM, {"config.json": timm_config, "model.safetensors": tmp / "timm.safetensors"})
    a["ours_sha"] = hub.add(REPO_OURS, {n: tmp / "ours" / n for n in ("config.json", "model.safetensors", "README.md")})
    # a second branch of our repo with other weights
    other = randomize_(es.build_model("efficient_sam_vitt", encoder_depth=2), seed=6)
    other.save_pretrained(tmp / "ours_v2")
    a["ours_v2"] = other
    hub.add(REPO_OURS, {n: tmp / "ours_v2" / n for n in ("config.json", "model.safetensors")}, ref="v2")
    a["hub"] = hub
    return a


@pytest.fixture
def offline_hub(assets, monkeypatch):
    """huggingface_hub reads its cache path and offline flag into module globals at import time:
    patch those (and the env, for subprocesses)."""
    import huggingface_hub.constants as constants

    cache = str(assets["hub"].root)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return assets


def assert_same_weights(model: torch.nn.Module, reference: dict) -> None:
    sd = model.state_dict()
    assert set(sd) == set(reference)
    for k, v in reference.items():
        assert sd[k].dtype == v.dtype and torch.equal(sd[k], v), k


def assert_matches_official(model: es.Sam, assets) -> None:
    """Our predictor with `model` reproduces the official SamPredictor outputs (small SAM weights)."""
    official = assets["official"]
    p = es.SamPredictor(model)
    p.set_image(assets["image"])
    assert rel_err(p.get_image_embedding(), official["embedding"]) <= TOL
    for key, kwargs in (("points", dict(point_coords=POINTS, point_labels=LABELS, multimask_output=True)),
                        ("box", dict(box=BOX, multimask_output=False))):
        masks, iou, low = p.predict(**kwargs)
        ref_masks, ref_iou, ref_low = official[key]
        assert rel_err(low, ref_low) <= TOL and rel_err(iou, ref_iou) <= TOL
        assert (masks == ref_masks).mean() > 0.999


# ------------------------------------------------------------------------------------------------
# Official formats from the (offline) Hub


def test_official_sam_pth_from_hub_matches_segment_anything(offline_hub):
    model = es.from_pretrained(REPO_SAM, filename="checkpoints/sam_vit_l_0b3195.pth", model="sam_vit_l", **SMALL)
    assert isinstance(model, es.Sam) and not model.training
    assert_same_weights(model, offline_hub["small_sd"])
    assert_matches_official(model, offline_hub)


def test_full_size_sam_vit_b_architecture_inferred(offline_hub):
    """No model= : ViT-B is recognised from the encoder width; weights bit-identical to the official
    model's; prompt encoder + decoder outputs equal the official ones (the encoder forward at full size
    is ~15 s on CPU; its parity is shown with the small files above)."""
    model = es.from_pretrained(REPO_SAM, filename="checkpoints/sam_vit_b_01ec64.pth")
    assert model.config == es.get_config("sam_vit_b")
    full = offline_hub["full_b"]
    assert_same_weights(model, full.state_dict())
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    coords = torch.tensor([[[300.0, 500.0], [700.0, 200.0]]])
    labels = torch.tensor([[1, 0]])
    with torch.no_grad():
        sparse, dense = full.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        ref_low, ref_iou = full.mask_decoder(emb, full.prompt_encoder.get_dense_pe(), sparse, dense, True)
        low, iou = model.decode(emb, coords, labels, multimask_output=True)
    assert rel_err(low, ref_low) <= TOL and rel_err(iou, ref_iou) <= TOL


@pytest.mark.filterwarnings("ignore:EfficientSAM was not trained with negative points")
def test_efficient_sam_vitt_from_hub_matches_official_fixture(offline_hub, efficient_sam_vitt_io):
    model = es.from_pretrained(REPO_ESAM, filename="efficient_sam_vitt.pt")  # architecture inferred
    assert model.config == es.get_config("efficient_sam_vitt") and not model.training
    io = efficient_sam_vitt_io  # the compact fixture: outputs on every 4th pixel
    p = es.SamPredictor(model)
    p.set_image(io["image_0"])
    assert rel_err(p.get_image_embedding()[0, :, ::4, ::4], io["embedding_sub4_0"]) <= TOL
    logits, iou, low = p.predict_torch(torch.from_numpy(io["points_0"]), torch.from_numpy(io["labels_0"]),
                                       return_logits=True)
    assert rel_err(low[..., ::4, ::4], io["lowres_logits_sub4_0"]) <= TOL
    assert rel_err(iou, io["iou_0"]) <= TOL
    assert rel_err(logits[..., ::4, ::4], io["fullres_logits_sub4_0"]) <= TOL


def test_efficient_sam_vits_inferred_from_width(offline_hub):
    model = es.from_pretrained(f"{REPO_ESAM}:efficient_sam_vits.pt")  # repo_id:filename form
    assert model.config == es.get_config("efficient_sam_vits")
    assert_same_weights(model, offline_hub["vits_sd"])


def test_transformers_safetensors_repo_matches_segment_anything(offline_hub):
    model = es.from_pretrained(REPO_HF_B, model="sam_vit_b", **SMALL)  # model.safetensors + foreign config.json
    assert_same_weights(model, offline_hub["small_sd"])  # duplicated shared_image_embedding dropped
    assert_matches_official(model, offline_hub)


def test_transformers_pytorch_model_bin_repo(offline_hub):
    """A repo with only pytorch_model.bin (the other file facebook/sam-vit-* ship) loads the same."""
    model = es.from_pretrained(REPO_HF_L, model="sam_vit_b", **SMALL)
    assert_same_weights(model, offline_hub["small_sd"])


def test_transformers_renaming_round_trip(offline_hub):
    from efficient_sam.checkpoint import from_transformers_layout, to_transformers_layout

    sd = offline_hub["small_sd"]
    hf = official_to_transformers(sd)
    assert to_transformers_layout(sd).keys() == hf.keys()
    assert from_transformers_layout(hf).keys() == sd.keys()
    # a file that kept only the top-level copy of the tied Fourier matrix
    hf.pop("prompt_encoder.shared_embedding.positional_embedding")
    back = from_transformers_layout(hf)
    assert torch.equal(back["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
                       sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"])


def test_timm_samvit_gives_image_encoder_teacher(offline_hub):
    enc = es.from_pretrained(REPO_TIMM, model="sam_vit_b", **SMALL)
    assert isinstance(enc, ImageEncoderViT) and not enc.training
    official_enc = {k[len("image_encoder."):]: v for k, v in offline_hub["small_sd"].items()
                    if k.startswith("image_encoder.")}
    assert_same_weights(enc, official_enc)
    from efficient_sam import transforms

    x = transforms.preprocess(offline_hub["image"], es.get_config("sam_vit_b"))
    with torch.no_grad():
        out = enc(x)
    assert out.shape == (1, 256, 64, 64)
    assert rel_err(out, offline_hub["official"]["embedding"]) <= TOL


def test_revisions_and_our_format_from_hub(offline_hub):
    main = es.from_pretrained(REPO_OURS)
    assert main.config == offline_hub["ours"].config  # config.json (encoder_depth=2) rebuilt
    assert_same_weights(main, offline_hub["ours"].state_dict())
    assert_same_weights(es.from_pretrained(REPO_OURS, revision=offline_hub["ours_sha"]), offline_hub["ours"].state_dict())
    assert_same_weights(es.from_pretrained(REPO_OURS, revision="v2"), offline_hub["ours_v2"].state_dict())


# ------------------------------------------------------------------------------------------------
# HQ-SAM


def test_hq_checkpoint_goes_to_the_hq_builder(offline_hub, monkeypatch, tmp_path):
    """HQ-SAM files are built by the library's HQ loader (`efficient_sam.hq`, no trainer package needed),
    with the base model given or inferred from the unchanged SAM keys."""
    from efficient_sam.hub import formats

    calls = []

    def spy_load_hq(sd, label, base, overrides, model=None):
        calls.append((base, label, overrides))
        return torch.nn.Linear(1, 1)  # in train mode

    monkeypatch.setattr(formats, "load_hq", spy_load_hq)
    net = es.from_pretrained(REPO_HQ, filename="sam_hq_vit_b.pth", model="sam_vit_b", **SMALL)
    assert not net.training
    base, label, overrides = calls[0]
    assert base == "sam_vit_b" and overrides == SMALL
    assert label == f"{REPO_HQ}/sam_hq_vit_b.pth@main"
    # the base model is inferred from the SAM keys when model= is not given (vit_l width here)
    sd = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024), "mask_decoder.hf_token.weight": torch.zeros(1, 256)}
    save_file(sd, str(tmp_path / "hq_l.safetensors"))
    es.from_pretrained(tmp_path / "hq_l.safetensors")
    assert calls[1][0] == "sam_vit_l"


def test_hq_checkpoint_names_missing_keys(tmp_path):
    sd = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024), "mask_decoder.hf_token.weight": torch.zeros(1, 256)}
    save_file(sd, str(tmp_path / "hq_l.safetensors"))
    with pytest.raises(CheckpointError, match=r"(?s)missing keys.*the file's image encoder looks like 'sam_vit_l'") as e:
        es.from_pretrained(tmp_path / "hq_l.safetensors", **SMALL)
    assert "image_encoder.pos_embed: checkpoint (1, 64, 64, 1024) vs model (1, 64, 64, 64)" in str(e.value)


def test_hq_checkpoint_from_the_offline_hub_is_an_hq_model(offline_hub):
    net = es.from_pretrained(REPO_HQ, filename="sam_hq_vit_b.pth", model="sam_vit_b", **SMALL)
    assert isinstance(net, es.Sam) and net.is_hq and not net.training
    assert all(p.requires_grad == es.hq.is_adapter_key(n) for n, p in net.named_parameters())  # as build_hq_model
    ref = torch.load(offline_hub["hub"].path(REPO_HQ, "sam_hq_vit_b.pth"), weights_only=True)
    assert net.state_dict().keys() == ref.keys() and all(torch.equal(v, ref[k]) for k, v in net.state_dict().items())


# ------------------------------------------------------------------------------------------------
# Our format: save_pretrained -> from_pretrained, push_to_hub


ROUND_TRIP = {
    "sam_vit_b": {},  # full size
    "sam_vit_l": SMALL,  # small overrides; config.json must record them
    "sam_vit_h": dict(SMALL, encoder_embed_dim=80, encoder_num_heads=5),
    "efficient_sam_vitt": {},
    "efficient_sam_vits": {},
}


def test_round_trip_covers_every_registered_model():
    assert sorted(ROUND_TRIP) == es.list_models()


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_save_load_round_trip_bit_identical(name, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = randomize_(es.build_model(name, **ROUND_TRIP[name]), seed=7)
    model.save_pretrained(tmp_path / name)
    files = sorted(p.name for p in (tmp_path / name).iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    stored = json.loads((tmp_path / name / "config.json").read_text())
    assert stored == json.loads(json.dumps(dataclasses.asdict(model.config)))
    for key, value in ROUND_TRIP[name].items():  # the overrides are in config.json
        expected = list(value) if isinstance(value, tuple) else value
        assert stored["image_encoder"][key[len("encoder_"):]] == expected
    card = (tmp_path / name / "README.md").read_text()
    assert "es.from_pretrained" in card and "library_name: efficient-sam-distill" in card
    loaded = es.from_pretrained(tmp_path / name)
    assert type(loaded) is es.Sam and not loaded.training
    assert loaded.config == model.config
    assert_same_weights(loaded, model.state_dict())
    assert_same_weights(es.from_pretrained(tmp_path / name / "model.safetensors"), model.state_dict())


def test_sam_from_pretrained_is_strict(tmp_path):
    """The mixin's own loader defaults to strict=False; ours names missing/unexpected keys."""
    model = es.build_model("efficient_sam_vitt", encoder_depth=1)
    model.save_pretrained(tmp_path)
    assert_same_weights(es.Sam.from_pretrained(tmp_path), model.state_dict())
    sd = load_file(str(tmp_path / "model.safetensors"))
    sd["mask_decoder.extra.weight"] = torch.zeros(3)
    del sd["mask_decoder.iou_token.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        es.Sam.from_pretrained(tmp_path)
    assert "missing keys (1):\n    mask_decoder.iou_token.weight" in str(e.value)
    assert "unexpected keys (1):\n    mask_decoder.extra.weight" in str(e.value)
    with pytest.raises(ValueError, match="strict"):
        es.Sam.from_pretrained(tmp_path, strict=False)


def test_image_encoder_save_load(tmp_path):
    enc = randomize_(es.build_model("sam_vit_b", **SMALL).image_encoder, seed=8)
    enc.save_pretrained(tmp_path)
    loaded = es.from_pretrained(tmp_path)
    assert isinstance(loaded, ImageEncoderViT) and loaded.cfg == enc.cfg
    assert_same_weights(loaded, enc.state_dict())
    with pytest.raises(CheckpointError, match="not a Sam"):
        es.Sam.from_pretrained(tmp_path)


def test_push_to_hub_uploads_our_format(tmp_path, monkeypatch):
    import huggingface_hub

    uploaded = {}

    class Repo:
        repo_id = "me/sam-small"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded["repo_id"] = repo_id
        uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
        uploaded["card"] = (Path(folder_path) / "README.md").read_text()
        return "https://huggingface.co/me/sam-small/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, **kw: Repo())
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    es.build_model("efficient_sam_vitt", encoder_depth=1).push_to_hub("me/sam-small")
    assert uploaded["files"] == ["README.md", "config.json", "model.safetensors"]
    assert 'es.from_pretrained("me/sam-small")' in uploaded["card"]


# ------------------------------------------------------------------------------------------------
# esam-convert


def test_convert_efficient_sam_from_hub(offline_hub, tmp_path, capsys):
    out = tmp_path / "vitt"
    assert convert.main([f"{REPO_ESAM}:efficient_sam_vitt.pt", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "efficient_sam format" in (out / "README.md").read_text()
    reference = es.from_pretrained(REPO_ESAM, filename="efficient_sam_vitt.pt")
    assert_same_weights(es.from_pretrained(out), reference.state_dict())
    assert "architecture efficient_sam_vitt" in capsys.readouterr().out
    assert convert.main([f"{REPO_ESAM}:efficient_sam_vitt.pt", str(out)]) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert convert.main([f"{REPO_ESAM}:efficient_sam_vits.pt", str(out), "--overwrite"]) == 0
    assert es.from_pretrained(out).config == es.get_config("efficient_sam_vits")


def test_convert_transformers_and_timm_with_overrides(offline_hub, tmp_path):
    sets = ["--set", "encoder_depth=2", "--set", "encoder_embed_dim=64", "--set", "encoder_num_heads=2",
            "--set", "encoder_global_attn_indexes=(1,)"]
    assert convert.main([REPO_HF_B, str(tmp_path / "hf"), "--model", "sam_vit_b", *sets]) == 0
    loaded = es.from_pretrained(tmp_path / "hf")  # no overrides needed any more: config.json has them
    assert_same_weights(loaded, offline_hub["small_sd"])  # = the official weights, so official outputs
    assert convert.main([REPO_TIMM, str(tmp_path / "timm"), "--model", "sam_vit_b", *sets]) == 0
    enc = es.from_pretrained(tmp_path / "timm")
    assert isinstance(enc, ImageEncoderViT)
    assert_same_weights(enc, {k[14:]: v for k, v in offline_hub["small_sd"].items() if k.startswith("image_encoder.")})


def test_convert_console_script_offline(offline_hub, tmp_path):
    """The installed `esam-convert`, in a fresh process configured by HF_HUB_OFFLINE / HF_HUB_CACHE."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "esam-convert"
    run = subprocess.run(
        [str(exe), f"{REPO_TIMM}", str(tmp_path / "teacher"), "--model", "sam_vit_b",
         *[f"--set={k}={v}" for k, v in SMALL.items()]],
        env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "timm_samvit format" in run.stdout
    enc = es.from_pretrained(tmp_path / "teacher")
    assert isinstance(enc, ImageEncoderViT) and enc.cfg.depth == 2


def test_convert_reports_errors(offline_hub, tmp_path, capsys):
    save_file({"conv.weight": torch.zeros(2, 2)}, str(tmp_path / "x.safetensors"))
    assert convert.main([str(tmp_path / "x.safetensors"), str(tmp_path / "out")]) == 1
    assert "unknown checkpoint format" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Errors a user can act on


def test_unknown_format_lists_known_formats(tmp_path):
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)  # a ViT, but not SAM's
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match="unknown checkpoint format") as e:
        es.from_pretrained(tmp_path / "vit.pth")
    for name in KNOWN_FORMATS:
        assert name in str(e.value)


def test_wrong_architecture_names_keys_and_shapes(offline_hub):
    with pytest.raises(CheckpointError) as e:
        es.from_pretrained(REPO_ESAM, filename="efficient_sam_vitt.pt", model="efficient_sam_vits")
    msg = str(e.value)
    assert "shape conflicts (148)" in msg
    assert "image_encoder.blocks.0.attn.proj.bias: checkpoint (192,) vs model (384,)" in msg
    assert "the file looks like the 'efficient_sam' layout" in msg
    assert "looks like 'efficient_sam_vitt'" in msg
    with pytest.raises(CheckpointError) as e:  # a SAM file into an EfficientSAM model
        es.from_pretrained(REPO_SAM, filename="checkpoints/sam_vit_l_0b3195.pth", model="efficient_sam_vitt")
    assert "unexpected keys" in str(e.value) and "prompt_encoder.mask_downscaling.0.weight" in str(e.value)
    with pytest.raises(CheckpointError, match="cannot infer the architecture.*width 64 and depth 2"):
        es.from_pretrained(REPO_SAM, filename="checkpoints/sam_vit_l_0b3195.pth")  # small file, no model=


def test_offline_without_cache_says_what_to_download(offline_hub):
    t = time.perf_counter()
    with pytest.raises(NotCachedError) as e:
        es.from_pretrained("facebook/sam-vit-huge")
    assert time.perf_counter() - t < 5  # no retry loop
    msg = str(e.value)
    assert "facebook/sam-vit-huge" in msg and "model.safetensors" in msg and "revision main" in msg
    assert "HF_HUB_OFFLINE" in msg and "hf download facebook/sam-vit-huge model.safetensors" in msg
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(NotCachedError) as e:
        es.from_pretrained(REPO_SAM, filename="checkpoints/sam_vit_h_4b8939.pth", revision="v1.0")
    assert "hf download ybelkada/segment-anything checkpoints/sam_vit_h_4b8939.pth --revision v1.0" in str(e.value)


def test_multi_file_repo_needs_filename(offline_hub):
    with pytest.raises(CheckpointError, match="choose one with filename=") as e:
        es.from_pretrained(REPO_ESAM)
    assert "efficient_sam_vitt.pt" in str(e.value) and "efficient_sam_vits.pt" in str(e.value)


def test_missing_local_path():
    with pytest.raises(CheckpointNotFoundError, match="neither an existing file"):
        es.from_pretrained("does/not/exist.pth")


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_truncated_file_fails_cleanly(offline_hub, tmp_path, kind):
    src = offline_hub["tmp"] / ("sam_small.pth" if kind == "pth" else "hf.safetensors")
    data = src.read_bytes()
    bad = tmp_path / f"model.{kind}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        es.from_pretrained(bad, model="sam_vit_b", **SMALL)
    offline_hub["hub"].add("broken/repo", {f"file.{kind}": bad})  # also through the Hub cache
    with pytest.raises(CheckpointError, match=r"broken/repo/file\.\w+@main: could not read"):
        es.from_pretrained("broken/repo", filename=f"file.{kind}")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch " + str(_Exploit.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_never_run(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"image_encoder.pos_embed": _Exploit()}, f)
    with pytest.raises(CheckpointError, match="could not read"):
        es.from_pretrained(tmp_path / "evil.pth")
    assert not _Exploit.marker.exists()


def test_mobile_sam_tinyvit_is_unsupported(tmp_path):
    save_file({"image_encoder.layers.0.blocks.0.attn.qkv.weight": torch.zeros(3, 1),
               "mask_decoder.iou_token.weight": torch.zeros(1, 256)}, str(tmp_path / "mobile_sam.safetensors"))
    with pytest.raises(UnsupportedCheckpointError, match="TinyViT"):
        es.from_pretrained(tmp_path / "mobile_sam.safetensors")


# ------------------------------------------------------------------------------------------------
# Bad checkpoints and loading: a clear error naming the file and the keys / fields (issue 13)


def _tiny():
    return randomize_(es.build_model("efficient_sam_vitt", encoder_depth=1, encoder_embed_dim=32,
                                     encoder_num_heads=1), seed=9)


TINY = dict(encoder_depth=1, encoder_embed_dim=32, encoder_num_heads=1)


def _poisoned(tmp_path, keys, value, kind):
    """Our tiny model with `keys` (None: every float tensor) set to `value`, as a .pth or a save_pretrained folder."""
    model = _tiny()
    sd = model.state_dict()
    for k in keys or [k for k, v in sd.items() if v.is_floating_point()]:
        sd[k] = torch.full_like(sd[k], value)
    if kind == "pth":
        torch.save(sd, tmp_path / "bad.pth")
        return tmp_path / "bad.pth"
    model.save_pretrained(tmp_path / "bad")
    save_file(sd, str(tmp_path / "bad" / "model.safetensors"))
    return tmp_path / "bad"


def _folder_with_config(tmp_path, edit=None, name="efficient_sam_vitt", encoder_only=False, **overrides):
    model = randomize_(es.build_model(name, **(overrides or TINY)), seed=10)
    (model.image_encoder if encoder_only else model).save_pretrained(tmp_path / "saved")
    if edit is not None:
        path = tmp_path / "saved" / "config.json"
        cfg = json.loads(path.read_text())
        edit(cfg)
        path.write_text(json.dumps(cfg))
    return tmp_path / "saved"


def _set_depth(value):
    return lambda cfg: cfg["image_encoder"].__setitem__("depth", value)


BAD_LOADS = {
    # weights that load but predict NaN
    "nan_tensor_build_model": (
        lambda t: es.build_model("efficient_sam_vitt", checkpoint=_poisoned(t, ["mask_decoder.iou_token.weight"],
                                                                             float("nan"), "pth"), **TINY),
        CheckpointError, r"bad\.pth holds non-finite values \(NaN or inf\) in 1 tensor\(s\).*\n    mask_decoder\.iou_token\.weight$",
    ),
    "inf_tensor_from_pretrained": (
        lambda t: es.from_pretrained(_poisoned(t, ["image_encoder.pos_embed"], float("inf"), "folder")),
        CheckpointError, r"bad holds non-finite values .*\n    image_encoder\.pos_embed$",
    ),
    "all_nan_weights": (
        lambda t: es.from_pretrained(_poisoned(t, None, float("nan"), "pth"), model="efficient_sam_vitt", **TINY),
        CheckpointError, r"non-finite values \(NaN or inf\) in \d{2,} tensor\(s\).*\.\.\. and \d+ more",
    ),
    "nan_encoder_checkpoint": (
        lambda t: es.build_model("efficient_sam_vitt", encoder_checkpoint=_poisoned(
            t, ["image_encoder.blocks.0.attn.qkv.weight"], float("nan"), "folder"), **TINY),
        CheckpointError, r"non-finite.*\n    image_encoder\.blocks\.0\.attn\.qkv\.weight",
    ),
    # config.json that names another architecture than model=
    "config_json_other_architecture": (
        lambda t: es.from_pretrained(_folder_with_config(t), model="sam_vit_b"),
        CheckpointError, r"saved: its config\.json describes a custom efficient_sam model, not model='sam_vit_b' "
        r"\(.*family: config\.json 'efficient_sam' vs model= 'sam'.*Drop model=",
    ),
    "config_json_same_shapes_other_behaviour": (
        lambda t: es.from_pretrained(_folder_with_config(t, name="sam_vit_b", decoder_activation="gelu", **SMALL),
                                     model="sam_vit_b", **SMALL),
        CheckpointError, r"not model='sam_vit_b' with overrides .*mask_decoder\.activation: config\.json 'gelu' vs model= 'relu'",
    ),
    "encoder_config_json_other_architecture": (
        lambda t: es.from_pretrained(_folder_with_config(t, encoder_only=True), model="sam_vit_b", **TINY),
        CheckpointError, r"describes a 32-wide 1-block image encoder, not model='sam_vit_b'.*"
        r"pos_embed: config\.json 'cls_grid' vs model= 'grid'",
    ),
    # config.json that is not a valid config
    "config_json_negative_depth": (
        lambda t: es.from_pretrained(_folder_with_config(t, _set_depth(-1))),
        CheckpointError, r"its config\.json is not a valid SamConfig \(encoder_depth \(image_encoder\.depth\) = -1: must be >= 1\)",
    ),
    "config_json_str_depth": (
        lambda t: es.from_pretrained(_folder_with_config(t, _set_depth("1"))),
        CheckpointError, r"config\.json is not a valid SamConfig \(encoder_depth \(image_encoder\.depth\) must be an int",
    ),
    "override_with_wrong_type": (
        lambda t: es.from_pretrained(_folder_with_config(t), encoder_depth="1"),
        TypeError, r"override encoder_depth='1': expected an int, got str",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_LOADS))
def test_bad_checkpoints_and_loads_raise_errors_naming_the_file_and_keys(case, tmp_path):
    make, exc, pattern = BAD_LOADS[case]
    with pytest.raises(exc, match=re.compile(pattern, re.S)):
        make(tmp_path)


def test_model_matching_config_json_and_old_stale_global_blocks_still_load(tmp_path):
    folder = _folder_with_config(tmp_path, name="sam_vit_b", **SMALL)
    assert es.from_pretrained(folder, model="sam_vit_b", **SMALL).config.image_encoder.depth == 2  # consistent model=
    # A config.json written before global_attn_indexes were checked (sam_vit_b at depth 2 kept (2, 5, 8, 11)).
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["image_encoder"]["global_attn_indexes"] = [1, 2, 5, 8, 11]
    path.write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match=r"global_attn_indexes \[2, 5, 8, 11\] past its 2 encoder blocks"):
        model = es.from_pretrained(folder)
    assert model.config.image_encoder.global_attn_indexes == (1,)


def test_unreachable_hub_fails_fast_and_cached_files_still_load(assets):
    """Online mode against a closed port on loopback (no network is used): a file that is not cached
    fails after the first connection error, not after huggingface_hub's 5 retries per file (~49 s)."""
    import subprocess
    import sys

    code = (
        "import time, efficient_sam as es\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    es.from_pretrained('facebook/sam-vit-huge')\n"
        "except es.hub.NotCachedError as e:\n"
        "    print(repr(str(e)))\n"
        "print(time.perf_counter() - t)\n"
        "t = time.perf_counter()\n"
        f"net = es.from_pretrained({REPO_OURS!r})\n"
        "print(time.perf_counter() - t)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(assets["hub"].root), "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    message, missing_s, cached_s = run.stdout.strip().splitlines()[-3:]
    assert float(missing_s) < 5 and float(cached_s) < 5, run.stdout
    assert "facebook/sam-vit-huge" in message and "could not be reached" in message
    assert "gave up after the first connection error" in message and "HF_HUB_OFFLINE=1" in message
    assert "Retry" not in run.stderr  # huggingface_hub's retry loop never started
