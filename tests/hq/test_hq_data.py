"""HQ-SAM adapter data (HQSeg-44K reader, large-scale jitter, prompts) and point-sampled loss."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

import efficient_sam as es
from efficient_sam.datasets import ImageRecord, ObjectRecord, mask_to_box
from hq_adapter.data import (
    HQDataConfig, HQSamples, SampleBuilder, SkipRecord, collate, open_hq_records, read_hqseg, read_soft_label,
    soft_label,
)
from hq_adapter.losses import LossConfig, point_sample, point_sampled_loss, uncertain_points
from helpers import GRABCUT

STEMS = sorted(p.stem for p in (GRABCUT / "images").glob("*.jpg"))[:6]
S = 256


@pytest.fixture(scope="module")
def cfg():
    return es.get_config("sam_vit_b", encoder_img_size=S)


def _soft(grabcut, stem: str) -> Image.Image:
    """The mask of `stem` in `grabcut`, blurred: a real soft 0..255 GT (RGB, to exercise channel 0)."""
    m = Image.open(grabcut / "masks" / f"{stem}.png").convert("L").filter(ImageFilter.GaussianBlur(2))
    return m.convert("RGB")


@pytest.fixture(scope="module")
def hq_root(tmp_path_factory, asset_paths):
    root = tmp_path_factory.mktemp("hqseg")
    layout = [  # (image dir, mask dir, stems)
        ("DIS5K/DIS-TR/im", "DIS5K/DIS-TR/gt", STEMS[0:2]),
        ("cascade_psp/ecssd", "cascade_psp/ecssd", STEMS[2:4]),
        ("DIS5K/DIS-VD/im", "DIS5K/DIS-VD/gt", STEMS[4:5]),
        ("thin_object_detection/COIFT/images", "thin_object_detection/COIFT/masks", STEMS[5:6]),
    ]
    for im_dir, gt_dir, stems in layout:
        (root / im_dir).mkdir(parents=True, exist_ok=True)
        (root / gt_dir).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            shutil.copy(asset_paths.grabcut / "images" / f"{stem}.jpg", root / im_dir / f"{stem}.jpg")
            _soft(asset_paths.grabcut, stem).save(root / gt_dir / f"{stem}.png")
    Image.open(asset_paths.grabcut / "images" / f"{STEMS[0]}.jpg").convert("L").save(root / "DIS5K/DIS-TR/im" / "gray.jpg")
    _soft(asset_paths.grabcut, STEMS[0]).save(root / "DIS5K/DIS-TR/gt" / "gray.png")
    shutil.copy(asset_paths.grabcut / "images" / f"{STEMS[1]}.jpg", root / "DIS5K/DIS-TR/im" / "no_mask.jpg")  # unpaired
    return root


# ----------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------


def test_read_hqseg(hq_root, asset_paths):
    recs = read_hqseg(hq_root)
    assert [r.image_id for r in recs] == (
        [f"DIS5K-TR/{s}" for s in sorted([*STEMS[0:2], "gray"])] + [f"ECSSD/{s}" for s in STEMS[2:4]]
    )
    for r in recs:
        assert len(r.objects) == 1
        obj = r.objects[0]
        assert obj.meta["soft"] and obj.meta["mask_path"].endswith(obj.object_id + ".png")
        assert obj.object_id == r.image_id.split("/")[1]
        img, soft, mask = r.image(), soft_label(obj), obj.mask()
        assert img.dtype == np.uint8 and img.shape == (*mask.shape, 3)
        assert soft.dtype == np.uint8 and soft.shape == mask.shape
        np.testing.assert_array_equal(mask, soft > 128)
        assert ((soft > 0) & (soft < 255)).any()  # soft values kept
        ref = np.asarray(_soft(asset_paths.grabcut, obj.object_id if obj.object_id != "gray" else STEMS[0]))[..., 0]
        np.testing.assert_array_equal(read_soft_label(obj.meta["mask_path"]), ref)
    val = read_hqseg(hq_root, split="val")
    assert [r.image_id for r in val] == [f"DIS5K-VD/{STEMS[4]}", f"COIFT/{STEMS[5]}"]
    assert len(open_hq_records(hq_root, "val", max_images=1)) == 1
    assert len(open_hq_records(hq_root)) == 5


def test_read_hqseg_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="DIS5K/DIS-TR/im"):
        read_hqseg(tmp_path)
    with pytest.raises(FileNotFoundError, match="COIFT"):
        read_hqseg(tmp_path, split="val")


def test_mask_folder_records(asset_paths):
    recs = open_hq_records(asset_paths.grabcut, max_images=3)
    assert len(recs) == 3
    obj = recs[0].objects[0]
    np.testing.assert_array_equal(soft_label(obj), obj.mask().astype(np.uint8) * 255)


# ----------------------------------------------------------------------------------------------
# Large-scale jitter
# ----------------------------------------------------------------------------------------------


def _builder(cfg, **kw):
    return SampleBuilder(cfg, HQDataConfig(**kw))


def _content(image: torch.Tensor) -> tuple[int, int]:
    """(h, w) of the non-padded region (normalised content is never exactly 0)."""
    nz = (image != 0).any(0)
    return int(nz.any(1).sum()), int(nz.any(0).sum())


def test_lsj_fixed_scale_matches_pil(cfg, hq_root):
    rec = read_hqseg(hq_root)[0]
    img, soft = rec.image(), soft_label(rec.objects[0])
    h, w = soft.shape
    nh, nw = (S, round(w * S / h)) if h >= w else (round(h * S / w), S)
    for flip in (0.0, 1.0):
        b = _builder(cfg, scale=(1.0, 1.0), hflip=flip)
        sample = b(rec, np.random.default_rng(3))
        i_src, l_src = (img[:, ::-1].copy(), soft[:, ::-1].copy()) if flip else (img, soft)
        lab = np.zeros((S, S), np.uint8)
        lab[:nh, :nw] = np.asarray(Image.fromarray(l_src).resize((nw, nh), Image.BILINEAR))
        np.testing.assert_array_equal(sample["label"].numpy(), lab)
        x = np.asarray(Image.fromarray(i_src).resize((nw, nh), Image.BILINEAR)).astype(np.float32)
        x = (x - np.float32(cfg.pixel_mean)) / np.float32(cfg.pixel_std)
        torch.testing.assert_close(sample["image"][:, :nh, :nw], torch.from_numpy(x).permute(2, 0, 1))
        assert (sample["image"][:, nh:] == 0).all() and (sample["image"][:, :, nw:] == 0).all()
        assert _content(sample["image"]) == (nh, nw)
        if not flip:
            unflipped = sample["label"][:nh, :nw].numpy().astype(int)
        else:  # mirrored (PIL's bilinear is mirror-symmetric up to rounding)
            assert np.abs(sample["label"][:nh, :nw].numpy()[:, ::-1] - unflipped).max() <= 1


def test_lsj_scale_spread(cfg, hq_root):
    rec = read_hqseg(hq_root)[2]  # landscape grabcut image
    h, w = soft_label(rec.objects[0]).shape
    assert w > h
    b = _builder(cfg)
    longs = []
    for seed in range(16):
        s = b(rec, np.random.default_rng(seed))
        assert s["image"].shape == (3, S, S) and s["image"].dtype == torch.float32
        assert s["label"].shape == (S, S) and s["label"].dtype == torch.uint8
        assert (s["label"][s["image"].abs().sum(0) == 0] == 0).all()  # label padded with 0
        assert (s["label"] > 128).any()
        longs.append(_content(s["image"])[1])
    assert min(longs) >= round(0.1 * S) and max(longs) == S
    assert min(longs) < 0.5 * S and sum(v == S for v in longs) >= 3  # s > 1 crops to S
    tiny = _builder(cfg, scale=(0.1, 0.1))(rec, np.random.default_rng(0))
    assert _content(tiny["image"]) == (round(h * round(0.1 * S) / w), round(0.1 * S))
    big = _builder(cfg, scale=(2.0, 2.0))(rec, np.random.default_rng(0))
    assert _content(big["image"]) == (S, S)  # 2S x (2S h / w) > S both ways: cropped


def test_determinism_and_skips(cfg, hq_root):
    recs = read_hqseg(hq_root)
    b = _builder(cfg)
    a1, a2 = b(recs[0], np.random.default_rng([0, 0, 0])), b(recs[0], np.random.default_rng([0, 0, 0]))
    for k in ("image", "label", "box", "points", "noise_mask"):
        assert torch.equal(a1[k], a2[k])
    img = recs[0].image()
    h, w = img.shape[:2]
    empty = ImageRecord("empty", "empty", lambda: img, [ObjectRecord("o", lambda: np.zeros((h, w), bool))])
    dot = np.zeros((h, w), bool)
    dot[5, 5] = True  # shrunk 19x it never stays > 128: every jitter draw loses it
    tiny = ImageRecord("tiny", "tiny", lambda: img, [ObjectRecord("o", lambda: dot)])
    with pytest.raises(SkipRecord, match="empty"):
        b(empty, np.random.default_rng(0))
    with pytest.raises(SkipRecord, match="10 draws"):
        _builder(cfg, scale=(0.1, 0.1))(tiny, np.random.default_rng(0))
    ds = HQSamples([empty, recs[0], recs[1]], b, seed=0)
    with pytest.warns(UserWarning, match="skipping empty"):
        s0 = ds[0]
    assert s0["skipped"] == 1 and torch.equal(s0["image"], ds[1]["image"])  # record 1 with key 0 + 1
    ds.set_epoch(1)
    s1 = ds[1]
    ds.set_epoch(0)
    assert not torch.equal(s1["image"], ds[1]["image"])
    batch = collate([s0, ds[1], ds[2]])
    assert batch["image"].shape == (3, 3, S, S) and batch["label"].dtype == torch.uint8
    assert batch["noise_mask"].shape == (3, 1, 4 * cfg.image_encoder.grid_size, 4 * cfg.image_encoder.grid_size)
    assert batch["points"].shape == (3, 10, 2) and batch["box"].shape == (3, 4)
    assert batch["prompt_type"].dtype == torch.long and batch["skipped"].shape == () and batch["skipped"] == 1


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


def test_prompts(cfg, hq_root):
    rec = read_hqseg(hq_root)[3]
    m = 4 * cfg.image_encoder.grid_size
    for seed in range(4):
        s = _builder(cfg, prompts=("box",))(rec, np.random.default_rng(seed))
        fg = s["label"].numpy() > 128
        assert s["prompt_type"] == 0 and s["box"].dtype == torch.float32
        assert s["box"].tolist() == list(mask_to_box(fg))
        assert (s["points"] == 0).all() and (s["noise_mask"] == 0).all()

        s = _builder(cfg, prompts=("points",))(rec, np.random.default_rng(seed))
        fg = s["label"].numpy() > 128
        pts = s["points"].numpy()
        assert s["prompt_type"] == 1 and pts.shape == (10, 2) and pts.dtype == np.float32
        assert fg[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
        assert len({tuple(p) for p in pts}) == 10 and (s["box"] == 0).all()

        s = _builder(cfg, prompts=("noise_mask",))(rec, np.random.default_rng(seed))
        nm = s["noise_mask"]
        assert s["prompt_type"] == 2 and nm.shape == (1, m, m) and nm.dtype == torch.float32
        assert set(nm.unique().tolist()) <= {0.0, 255.0}
        clean = F.interpolate(s["label"][None, None].float(), (m, m), mode="bilinear", align_corners=False) / 255
        rec8 = F.interpolate(F.interpolate(clean, (m // 8, m // 8), mode="bilinear"), (m, m), mode="bilinear")
        incoherent = ((clean - rec8).abs() >= 0.01)[0]
        diff = (nm > 127) != (clean[0] > 0.5)
        assert diff.any() and not (diff & ~incoherent).any()


def test_prompt_choice(cfg, hq_root):
    rec = read_hqseg(hq_root)[2]
    b = _builder(cfg, scale=(0.5, 0.5))
    assert {b(rec, np.random.default_rng(i))["prompt_type"] for i in range(12)} == {0, 1, 2}
    ecfg = es.get_config("efficient_sam_vitt", encoder_img_size=S)
    assert not ecfg.prompt_encoder.mask_prompt
    eb = _builder(ecfg, scale=(0.5, 0.5))
    assert {eb(rec, np.random.default_rng(i))["prompt_type"] for i in range(12)} == {0, 1}
    with pytest.raises(ValueError, match="no usable prompt"):
        _builder(ecfg, prompts=("noise_mask",))
    with pytest.raises(ValueError, match="unknown prompt"):
        _builder(cfg, prompts=("scribble",))


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


def _bilinear_zeros(img: np.ndarray, x: float, y: float) -> float:
    """Bilinear at normalised (x, y) in [0, 1], pixel centres at (j + 0.5) / W, zeros outside."""
    h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = 0.0
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * float(img[yy, xx])
    return out


def test_point_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 5, 7, generator=g, dtype=torch.float64)
    jj, ii = torch.meshgrid(torch.arange(7, dtype=torch.float64), torch.arange(5, dtype=torch.float64), indexing="xy")
    centres = torch.stack([(jj + 0.5) / 7, (ii + 0.5) / 5], -1).reshape(1, -1, 2).expand(2, -1, -1)
    # pixel centres give the pixel values
    vals = point_sample(x, centres).reshape(2, 1, 5, 7)
    torch.testing.assert_close(vals, x)
    coords = torch.rand(2, 50, 2, generator=g, dtype=torch.float64)
    got = point_sample(x, coords)
    ref = [[_bilinear_zeros(x[n, 0].numpy(), *coords[n, p].tolist()) for p in range(50)] for n in range(2)]
    torch.testing.assert_close(got[:, 0], torch.tensor(ref, dtype=torch.float64))


def test_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 4, 4, generator=g)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    target = torch.stack([((xx - 3) ** 2 + (yy - 4) ** 2 < 9).float(), torch.sigmoid(xx - 4)])[:, None]
    P = 16 * 3  # 3x the full low-res grid
    out = point_sampled_loss(logits, target, P, 3.0, 0.75, torch.Generator().manual_seed(7))
    coords = uncertain_points(logits, P, 3.0, 0.75, torch.Generator().manual_seed(7))
    bce = dice = 0.0
    for n in range(2):
        xs = np.array([_bilinear_zeros(logits[n, 0].numpy(), *c) for c in coords[n].tolist()])
        ts = np.array([_bilinear_zeros(target[n, 0].numpy(), *c) for c in coords[n].tolist()])
        bce += np.mean(np.maximum(xs, 0) - xs * ts + np.log1p(np.exp(-np.abs(xs))))
        p = 1 / (1 + np.exp(-xs))
        dice += 1 - (2 * (p * ts).sum() + 1) / (p.sum() + ts.sum() + 1)
    assert out["bce"].item() == pytest.approx(bce / 2, rel=1e-5)
    assert out["dice"].item() == pytest.approx(dice / 2, rel=1e-5)
    assert out["loss"].item() == pytest.approx((bce + dice) / 2, rel=1e-5)
    # logits 0 -> BCE exactly ln 2 whatever the target; uint8 targets read as 0..255
    zero = point_sampled_loss(torch.zeros(2, 1, 4, 4), (target * 255).round().to(torch.uint8), 100)
    assert zero["bce"].item() == pytest.approx(math.log(2), rel=1e-6)


def test_importance_sampling_and_gradients():
    ramp = torch.linspace(-4, 4, 32)
    logits = (ramp[None, :] + 0.5 * ramp[:, None]).reshape(1, 1, 32, 32).repeat(2, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    coords = uncertain_points(logits, 500, 3.0, 1.0, g)
    uniform = torch.rand(2, 1500, 2, generator=g)
    med = point_sample(logits, uniform).abs().median()
    assert (point_sample(logits, coords).abs() < med).all()
    mixed = uncertain_points(logits, 500, 3.0, 0.75, torch.Generator().manual_seed(0))
    assert (point_sample(logits, mixed[:, :375]).abs() < med).all()
    assert (point_sample(logits, mixed[:, 375:]).abs() > med).any()  # the uniform quarter
    assert coords.min() >= 0 and coords.max() <= 1

    lg = torch.randn(3, 1, 16, 16, requires_grad=True)
    target = (torch.rand(3, 1, 64, 64) > 0.5).float()
    cfg = LossConfig()
    kw = dict(num_points=cfg.num_points, oversample_ratio=cfg.oversample_ratio,
              importance_sample_ratio=cfg.importance_sample_ratio)
    a = point_sampled_loss(lg, target, generator=torch.Generator().manual_seed(3), **kw)
    b = point_sampled_loss(lg, target, generator=torch.Generator().manual_seed(3), **kw)
    c = point_sampled_loss(lg, target, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a["loss"], b["loss"]) and not torch.equal(a["loss"], c["loss"])
    a["loss"].backward()
    assert lg.grad is not None and torch.isfinite(lg.grad).all() and lg.grad.abs().sum() > 0
