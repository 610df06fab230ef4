"""EfficientSAM fine-tuning: SA-1B data through `datasets`, prompt simulation, losses, the model's
initialisation, and real training runs on GrabCut photos (learning, resume, two processes)."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

import efficient_sam as es
from efficient_sam import transforms
from efficient_sam.datasets import mask_to_box, read_mask_folder
from efficient_sam.training import list_checkpoints, load_config
from finetune.data import (
    DataConfig, SampleBuilder, StreamingSamples, collate, count_sa1b_images, open_sa1b_stream,
    row_record, sa1b_shards,
)
from finetune.losses import LossConfig, dice_loss, focal_loss, sam_loss, select_outputs
from finetune.model import InteractiveSam, ModelConfig, build_finetune_model
from finetune.prompt_simulation import PromptConfig, noisy_boxes, round_schedule, sample_error_points
from finetune.train import FinetuneConfig, FinetuneTask

from helpers import ROOT, launch, randomize_

SMOKE = ROOT / "finetune" / "configs" / "smoke.yaml"
# Smaller and shorter than smoke.yaml, for the runs that test the loop rather than learning.
TINY = [
    "model.overrides={encoder_img_size: 128, encoder_depth: 2}", "train.batch_size=4", "train.global_batch_size=4",
    "train.num_workers=0", "train.log_every=1", "train.eval_every=null", "data.max_val_images=2",
    "data.eval_prompts=[box]", "prompt.point_rounds=2", "prompt.no_point_rounds=1", "train.warmup_steps=0",
]


@pytest.fixture(scope="module")
def run_finetune(run_training, asset_paths):
    """`run_finetune(out, *overrides, config=SMOKE) -> FinetuneTask`: a run on the GrabCut photos."""
    grabcut = asset_paths.grabcut

    def run(out: Path, *overrides: str, config: Path = SMOKE) -> FinetuneTask:
        return run_training(FinetuneConfig, FinetuneTask, config,
                            [f"output_dir={out}", f"data.train={grabcut}", f"data.val={grabcut}", *overrides])

    return run


def _encode(mask: np.ndarray) -> dict:
    from pycocotools import mask as mu

    rle = mu.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def _sa1b_entry(i: int, rec) -> tuple[bytes, str, int]:
    """GrabCut image i as an SA-1B pair: the object, its box filled, the whole image (> 90%: dropped),
    and a random blob. -> (jpg bytes, json text, number of usable masks)."""
    img = rec.image()
    h, w = img.shape[:2]
    obj = rec.objects[0].mask()
    ys, xs = np.nonzero(obj)
    box = np.zeros_like(obj)
    box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    rng = np.random.default_rng(i)
    blob = np.zeros_like(obj)
    cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
    yy, xx = np.mgrid[:h, :w]
    blob[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) // 6) ** 2] = True
    masks = [obj, box, np.ones_like(obj), blob]
    anns = [
        {"id": k, "segmentation": _encode(m), "area": int(m.sum()), "bbox": [0, 0, 1, 1], "predicted_iou": 0.9,
         "stability_score": 0.9, "crop_box": [0, 0, w, h], "point_coords": [[0.0, 0.0]]}
        for k, m in enumerate(masks)
    ]
    meta = {"image": {"image_id": i, "width": w, "height": h, "file_name": f"sa_{i}.jpg"}, "annotations": anns}
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    usable = sum(0 < m.sum() <= 0.9 * h * w for m in masks)
    return buf.getvalue(), json.dumps(meta), usable


@pytest.fixture(scope="module")
def sa1b(tmp_path_factory, asset_paths):
    """8 GrabCut photos in SA-1B layout: an extracted folder and two .tar shards of 4 images."""
    root = tmp_path_factory.mktemp("sa1b")
    folder, tars = root / "folder", root / "tars"
    folder.mkdir()
    tars.mkdir()
    recs = read_mask_folder(asset_paths.grabcut)[:8]
    entries = [_sa1b_entry(i + 1, r) for i, r in enumerate(recs)]
    for i, (jpg, text, _) in enumerate(entries):
        (folder / f"sa_{i + 1}.jpg").write_bytes(jpg)
        (folder / f"sa_{i + 1}.json").write_text(text)
    for s in range(2):
        with tarfile.open(tars / f"sa_00000{s}.tar", "w") as tf:
            for i in range(4 * s, 4 * s + 4):
                for ext in ("jpg", "json"):
                    tf.add(folder / f"sa_{i + 1}.{ext}", arcname=f"sa_{i + 1}.{ext}")
    return {"folder": folder, "tars": tars, "usable": {f"sa_{i + 1}": e[2] for i, e in enumerate(entries)}}


# ------------------------------------------------------------------------------------------------
# Data


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
def test_sa1b_rle_decoding_equals_pycocotools(sa1b):
    from pycocotools import mask as mu

    meta = json.loads((sa1b["folder"] / "sa_3.json").read_text())
    rec = row_record({"__key__": "sa_3", "__url__": "x", "jpg": (sa1b["folder"] / "sa_3.jpg").read_bytes(),
                      "json": json.dumps(meta)})
    assert len(rec.objects) == 4
    for obj, ann in zip(rec.objects, meta["annotations"]):
        ref = mu.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
        np.testing.assert_array_equal(obj.mask(), ref.astype(bool))
    rng = np.random.default_rng(0)
    for _ in range(20):  # random shapes, including empty and full masks
        m = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.random()
        rec = row_record({"__key__": "sa_9", "__url__": "x", "jpg": b"", "json": json.dumps(
            {"image": {"height": m.shape[0], "width": m.shape[1]}, "annotations": [{"segmentation": _encode(m)}]})})
        np.testing.assert_array_equal(rec.objects[0].mask(), m)


@pytest.mark.parametrize("kind", ["tars", "folder"])
def test_sa1b_streams_through_datasets_with_two_workers(sa1b, kind):
    stream = open_sa1b_stream(sa1b[kind], shard_size=2)
    assert stream.num_shards == (2 if kind == "tars" else 4)
    assert count_sa1b_images(sa1b_shards(sa1b[kind], 2)) == 8
    keys = [k for batch in DataLoader(stream, batch_size=None, num_workers=2) for k in [batch["__key__"]]]
    assert sorted(keys) == sorted(sa1b["usable"])  # every image once, the shards split over the workers

    cfg = es.get_config("efficient_sam_vitt", encoder_img_size=256)
    builder = SampleBuilder(cfg, DataConfig(max_masks=64), PromptConfig())
    samples = StreamingSamples(open_sa1b_stream(sa1b[kind], shard_size=2), builder, seed=0, shuffle_buffer=4)
    batches = list(DataLoader(samples, batch_size=2, num_workers=2, collate_fn=collate))
    assert sum(b["image"].shape[0] for b in batches) == 8
    # The whole-image mask (> 90% of the image) is dropped; the other three are kept.
    assert sum(b["masks"].shape[0] for b in batches) == sum(sa1b["usable"].values()) == 24
    b = batches[0]
    assert b["image"].shape[1:] == (3, 256, 256) and b["masks"].shape[1:] == (64, 64)
    assert b["image_index"].tolist() == [0, 0, 0, 1, 1, 1]


def test_broken_sa1b_records_are_skipped_and_counted(sa1b, tmp_path):
    shutil.copytree(sa1b["folder"], tmp_path / "d")
    (tmp_path / "d" / "sa_2.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "d" / "sa_5.json").write_text("{broken json")
    cfg = es.get_config("efficient_sam_vitt", encoder_img_size=128)
    builder = SampleBuilder(cfg, DataConfig(), PromptConfig())
    samples = StreamingSamples(open_sa1b_stream(tmp_path / "d"), builder, seed=0, shuffle_buffer=0)
    with pytest.warns(UserWarning, match="skipping"):
        items = list(samples)
    assert len(items) == 6 and sum(it["skipped"] for it in items) == 2


def test_samples_follow_the_family_frames(asset_paths):
    """Targets, points and boxes land where the ground truth is, in the stretched (EfficientSAM) and
    the padded (SAM) input frames; SAM's padding is zero in the image and in the targets."""
    rec = read_mask_folder(asset_paths.grabcut)[0]
    gt = rec.objects[0].mask()
    h, w = gt.shape
    for name in ("efficient_sam_vitt", "sam_vit_b"):
        cfg = es.get_config(name, encoder_img_size=512)
        s = SampleBuilder(cfg, DataConfig(), PromptConfig(box_noise_std=0.0))(rec, np.random.default_rng(0))
        t = s["masks"][0].numpy()
        assert t.shape == (128, 128)
        if name == "sam_vit_b":  # 481 x 321 -> 512 x 342 content, padded below
            rows = round(342 * 128 / 512)
            assert not t[rows:].any() and torch.all(s["image"][:, 342:] == 0)
            ref = np.asarray(Image.fromarray(gt.astype(np.uint8) * 255).resize((128, rows), Image.BILINEAR)) >= 128
            np.testing.assert_array_equal(t[:rows], ref)
        else:
            ref = np.asarray(Image.fromarray(gt.astype(np.uint8) * 255).resize((128, 128), Image.BILINEAR)) >= 128
            np.testing.assert_array_equal(t, ref)
        x, y = s["points"][0].tolist()  # input-frame pixels -> the target grid
        assert t[int(y * 128 / 512), int(x * 128 / 512)]
        # Without noise the box is the mask's tight box (x1/y1 exclusive, as esam-eval) in the input frame.
        ref_box = transforms.transform_boxes(torch.tensor([mask_to_box(gt)], dtype=torch.float32), (h, w), cfg)
        torch.testing.assert_close(s["boxes"], ref_box)


# ------------------------------------------------------------------------------------------------
# Prompt simulation


def test_error_region_sampler_puts_positives_on_false_negatives_and_negatives_on_false_positives():
    m = 32
    target = torch.zeros(3, m, m, dtype=torch.bool)
    pred = torch.zeros(3, m, m, dtype=torch.bool)
    target[:, 4:20, 4:20] = True
    pred[:, 10:28, 10:28] = True  # overlap 10..20: FN = target only, FP = pred only
    pred[2] = target[2]  # a perfect prediction: no error
    fn, fp = target & ~pred, pred & ~target
    g = torch.Generator().manual_seed(0)
    seen = {0: 0, 1: 0}
    for _ in range(200):
        coords, labels = sample_error_points(pred, target, True, 1024, g)
        assert labels[2] == -1 and coords[2].tolist() == [-1.0, -1.0]
        for k in range(2):
            col = int((coords[k, 0] + 0.5) * m / 1024)
            row = int((coords[k, 1] + 0.5) * m / 1024)
            assert (coords[k] + 0.5).remainder(1024 / m).sub(512 / m).abs().max() < 1e-3  # cell centres
            region = fn if labels[k] == 1 else fp
            assert region[k, row, col], (labels[k], row, col)
            seen[int(labels[k])] += 1
    # FN has 16^2 - 10^2 = 156 cells, FP 18^2 - 100 = 224: uniform over the union.
    assert abs(seen[1] / 400 - 156 / 380) < 0.08
    _, labels = sample_error_points(pred, target, False, 1024, g)
    assert labels[:2].tolist() == [1, 1]  # without negatives only false negatives are eligible


def test_box_noise_follows_the_stated_distribution():
    rng = np.random.default_rng(0)
    n = 20000
    small = np.tile([[100.0, 200.0, 150.0, 260.0]], (n, 1))  # w 50, h 60: std 5 / 6 px, clipped at > 3 std
    d = noisy_boxes(small, rng, 0.1, 20.0) - small
    np.testing.assert_allclose(d.std(0), [5.0, 6.0, 5.0, 6.0], rtol=0.03)
    np.testing.assert_allclose(np.corrcoef(d.T)[0, 2], 0.0, atol=0.03)  # independent per coordinate
    np.testing.assert_allclose(d.mean(0), 0.0, atol=0.2)
    big = np.tile([[0.0, 0.0, 800.0, 900.0]], (n, 1))  # std 80 / 90 px: clipped at 20 px
    d = noisy_boxes(big, rng, 0.1, 20.0) - big
    assert np.abs(d).max() <= 20.0 + 1e-4
    assert (np.abs(d) > 19.99).mean() > 0.7  # most draws exceed the cap
    b = noisy_boxes(np.array([[0.0, 0.0, 10.0, 10.0]]), rng, 0.1, 20.0, bounds=(10, 10))
    assert (b >= 0).all() and (b <= 10).all() and (b[:, 2:] > b[:, :2]).all()


def test_round_schedule_has_eight_points_and_two_empty_rounds():
    for seed in range(20):
        r = round_schedule(8, 2, np.random.default_rng(seed))
        assert len(r) == 10 and sum(r) == 8 and r[-1] is False
    assert round_schedule(4, 0, np.random.default_rng(0)) == [True] * 4


# ------------------------------------------------------------------------------------------------
# Losses


def test_losses_match_hand_computed_values():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 1.0]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    p = 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0, 1.0])))
    t = np.array([1.0, 1.0, 0.0, 0.0])
    p_t = p * t + (1 - p) * (1 - t)
    ce = -np.log(p_t)
    alpha = 0.25 * t + 0.75 * (1 - t)
    focal = (alpha * ce * (1 - p_t) ** 2).mean()
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    torch.testing.assert_close(focal_loss(logits, target)[0], torch.tensor(focal, dtype=torch.float32))
    torch.testing.assert_close(dice_loss(logits, target)[0], torch.tensor(dice, dtype=torch.float32))

    # sam_loss on one mask with the single-mask token: 20 focal + dice + (iou_pred - IoU)^2.
    # Prediction (logit > 0) = {(0, 1), (1, 1)}, target {(0, 0), (0, 1)}: IoU 1/3.
    logits4 = logits[:, None].expand(1, 4, 2, 2)
    iou_pred = torch.tensor([[0.5, 0.0, 0.0, 0.0]])
    out, chosen = sam_loss(logits4, iou_pred, target[0][None], torch.tensor([False]), LossConfig())
    assert chosen.tolist() == [0]
    torch.testing.assert_close(out["iou"], torch.tensor(1 / 3))
    expected = 20 * focal + dice + (0.5 - 1 / 3) ** 2
    torch.testing.assert_close(out["loss"], torch.tensor(expected, dtype=torch.float32))


def test_min_over_multimask_backpropagates_only_the_lowest_loss_mask():
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    logits = torch.full((2, 4, 8, 8), -4.0)
    logits[:, 2] = target * 8 - 4  # token 2 matches the target
    logits[:, 0] = target * 8 - 4  # token 0 too (but it is not a multimask candidate)
    logits[:, 3, :, :4] = 4.0  # token 3 half wrong, token 1 all background
    logits.requires_grad_(True)
    multimask = torch.tensor([True, False])
    cfg = LossConfig(iou_all_masks=False)
    out, chosen = sam_loss(logits, torch.zeros(2, 4), target, multimask, cfg)
    assert chosen.tolist() == [2, 0]
    out["loss"].backward()
    grad_norm = logits.grad.flatten(2).abs().sum(-1)
    assert (grad_norm[0, [0, 1, 3]] == 0).all() and grad_norm[0, 2] > 0
    assert (grad_norm[1, 1:] == 0).all() and grad_norm[1, 0] > 0
    per_token = torch.tensor([[3.0, 2.0, 1.0, 5.0]])
    assert select_outputs(per_token, torch.tensor([True])).tolist() == [2]


# ------------------------------------------------------------------------------------------------
# Model


def _batch(cfg: es.SamConfig, grabcut: Path, n_images: int = 2, **data) -> dict:
    builder = SampleBuilder(cfg, DataConfig(**data), PromptConfig())
    recs = read_mask_folder(grabcut)[:n_images]
    samples = [builder(r, np.random.default_rng(i)) for i, r in enumerate(recs)]
    samples[0]["use_box"][:] = True
    samples[1]["use_box"][:] = False
    return collate(samples)


@pytest.mark.parametrize("decoder", ["efficient_sam", "sam"])
def test_interactive_rounds_follow_the_decoder(decoder, asset_paths):
    """SAM's decoder: 11 rounds, negatives, mask logits fed back; EfficientSAM's: positives only, no mask
    prompt, at most its 6 point slots (1 + 4 rounds). One decoder call per round for all masks."""
    sam = build_finetune_model(ModelConfig(overrides={"encoder_img_size": 128, "encoder_depth": 1}, decoder=decoder))
    randomize_(sam, seed=0)
    model = InteractiveSam(sam, PromptConfig(), LossConfig())
    calls = []
    model.sam.prompt_encoder.register_forward_hook(lambda m, args, out: calls.append(
        (args[0].shape, args[1].clone(), args[3] is not None and tuple(args[3].shape[-2:]))))
    # With SAM's decoder the loss grid is twice the low-res one; the fed-back logits stay low-res.
    batch = _batch(sam.config, asset_paths.grabcut, mask_size=64 if decoder == "sam" else None)
    losses = model(batch)
    losses["loss"].backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert sam.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0  # the encoder trains too
    labels = torch.cat([c[1] for c in calls], 1)
    if decoder == "sam":
        assert len(calls) == 11 and [c[2] for c in calls] == [False] + [(32, 32)] * 10
        assert calls[-1][0][1] == 2 + 8 and (labels == 0).any() and (labels == 1).any()
    else:
        assert len(calls) == 5 and not any(c[2] for c in calls)
        assert calls[-1][0][1] == 6 and not (labels == 0).any()
    assert all(c[0][0] == batch["masks"].shape[0] for c in calls)  # every mask of the batch, each call


def test_encoder_from_sami_final_and_decoder_from_a_sam_checkpoint(tmp_path):
    over = {"encoder_img_size": 128, "encoder_depth": 2}
    sami = es.build_model("efficient_sam_vitt", **over).image_encoder
    randomize_(sami, seed=1)
    sami.save_pretrained(tmp_path / "sami_final")  # what pretrain_sami writes to final/
    sam = es.build_model("sam_vit_b")  # the official file's architecture (its encoder is not used)
    randomize_(sam.prompt_encoder, seed=2)
    randomize_(sam.mask_decoder, seed=3)
    torch.save(sam.state_dict(), tmp_path / "sam_vit_b.pth")  # the official key layout
    model = build_finetune_model(ModelConfig(
        overrides=over, decoder="sam", encoder_init=str(tmp_path / "sami_final"), decoder_init=str(tmp_path / "sam_vit_b.pth")
    ))
    for part, src in (("image_encoder", sami), ("prompt_encoder", sam.prompt_encoder), ("mask_decoder", sam.mask_decoder)):
        ref = src.state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in getattr(model, part).state_dict().items()), part
    assert model.training
    with pytest.raises(Exception, match=r"missing keys|unexpected keys"):  # EfficientSAM decoder vs SAM's
        build_finetune_model(ModelConfig(overrides=over, decoder_init=str(tmp_path / "sam_vit_b.pth")))


# ------------------------------------------------------------------------------------------------
# Training runs


@pytest.mark.slow
def test_smoke_run_learns_box_prompted_masks(tmp_path, asset_paths, run_finetune, read_metrics):
    """smoke.yaml from random weights on 8 GrabCut photos: box-prompt mIoU on them >= 0.85; the
    exported model gives the same number through `esam-eval`."""
    out = tmp_path / "smoke"
    run_finetune(out)
    rows = read_metrics(out)
    evals = [r for r in rows if "eval/miou_box" in r]
    assert evals[0]["step"] == 0 and evals[0]["eval/miou_box"] < 0.5
    assert evals[-1]["step"] == 60 and evals[-1]["eval/miou_box"] >= 0.85, evals
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.25 * losses[0]
    assert rows[-2]["data/masks"] == 60 * 8 and rows[-2]["data/skipped_images"] == 0

    from benchmarks.evaluate import main as esam_eval

    assert esam_eval(["--model", str(out / "final"), "--data", str(asset_paths.grabcut), "--limit", "8", "--prompt", "box",
                      "--json", str(tmp_path / "e.json"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert math.isclose(res["miou"], evals[-1]["eval/miou_box"], rel_tol=1e-4)


def test_resume_is_bitwise_identical(tmp_path, run_finetune, read_metrics):
    common = [*TINY, "train.max_steps=6", "train.save_every=2", "train.num_workers=1"]
    run_finetune(tmp_path / "a", *common)
    b = tmp_path / "b"
    run_finetune(b, *common, "train.stop_after=3")  # "killed" after step 3
    assert [p.name for p in list_checkpoints(b)] == ["step_2", "step_3"] and not (b / "final").exists()
    run_finetune(b, *common, "resume=auto")
    wa = load_file(str(tmp_path / "a" / "final" / "model.safetensors"))
    wb = load_file(str(b / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    la = [r["loss"] for r in read_metrics(tmp_path / "a") if "loss" in r]
    lb = [r["loss"] for r in read_metrics(b) if "loss" in r]
    assert la == lb


def test_sa1b_streaming_run_trains(tmp_path, sa1b, run_finetune, read_metrics):
    out = tmp_path / "s"
    run_finetune(out, *TINY, f"data.train={sa1b['tars']}", "data.max_images=null", "train.max_steps=null", "train.epochs=2")
    rows = [r for r in read_metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # 8 images // 4 = 2 steps per epoch
    assert rows[-1]["data/masks"] == 2 * 24 and (out / "final" / "model.safetensors").is_file()


@pytest.mark.distributed
def test_two_process_cpu_run_trains(tmp_path, asset_paths, read_metrics):
    args = ["--config", str(SMOKE), f"data.train={asset_paths.grabcut}", f"data.val={asset_paths.grabcut}", f"output_dir={tmp_path / 'two'}",
            *TINY, "train.max_steps=8", "train.batch_size=2", "train.global_batch_size=4", "data.max_images=8"]
    res = launch("finetune.train", args, 2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 process(es)" in res.stdout + res.stderr
    rows = [r for r in read_metrics(tmp_path / "two") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[-1]["data/masks"] == 8 * 4  # 4 images per optimizer step over both processes
    assert np.mean([r["loss"] for r in rows[-2:]]) < np.mean([r["loss"] for r in rows[:2]])
    model = es.from_pretrained(tmp_path / "two" / "final")
    assert isinstance(model, es.Sam) and model.config.image_encoder.img_size == 128


# ------------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.decoder=mobile", "model: .*decoder must be efficient_sam or sam"),
        ("model.overrides={encoder_dept: 2}", "model: .*unknown override 'encoder_dept'"),
        ("data.train=/nonexistent", "data.train: .*does not exist"),
        ("data.eval_prompts=[scribble]", "unknown prompt 'scribble'"),
        ("data.streaming=true", "streaming=true needs SA-1B data"),
        ("model.encoder_init=/nonexistent/final", "model: .*/nonexistent/final"),
        ("prompt.multimask=sometimes", "prompt.multimask must be auto, ambiguous or always"),
    ],
)
def test_bad_finetune_config_is_a_clear_error(tmp_path, override, message, fresh_accelerate_state):
    from finetune.train import main

    with pytest.raises(SystemExit) as e:
        main(["--config", str(SMOKE), f"output_dir={tmp_path}", override])
    assert re.search(message, str(e.value)), e.value


def test_paper_configs_resolve_to_the_recipe():
    for name, model in (("efficient_sam_vitt", "efficient_sam_vitt"), ("efficient_sam_vits", "efficient_sam_vits")):
        cfg = load_config(FinetuneConfig, ROOT / "finetune" / "configs" / f"{name}.yaml")
        t = cfg.train
        assert (t.epochs, t.global_batch_size, t.lr, t.weight_decay, t.lr_schedule) == (5, 128, 4e-4, 0.1, "linear")
        assert (t.optimizer, t.betas, t.mixed_precision) == ("adamw", (0.9, 0.999), "auto")
        assert cfg.model.name == model and es.get_config(model).image_encoder.img_size == 1024
        assert (cfg.data.max_masks, cfg.data.max_mask_area) == (64, 0.9)
        assert (cfg.loss.focal_weight, cfg.loss.dice_weight, cfg.loss.iou_weight) == (20, 1, 1)
        assert (cfg.prompt.box_noise_std, cfg.prompt.box_noise_max, cfg.prompt.point_rounds, cfg.prompt.no_point_rounds) == (0.1, 20, 8, 2)


def test_sam_decoder_variant_takes_negative_points_and_mask_prompts_in_the_predictor(asset_paths):
    import warnings

    model = build_finetune_model(ModelConfig(overrides={"encoder_img_size": 128, "encoder_depth": 1}, decoder="sam")).eval()
    assert model.config.family == "efficient_sam" and model.config.decoder_family == "sam"
    p = es.SamPredictor(model)
    image = read_mask_folder(asset_paths.grabcut)[0].image()
    p.set_image(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not trained with negative points" warning
        masks, iou, low = p.predict(np.array([[200, 150], [20, 20]]), np.array([1, 0]), multimask_output=False)
        masks2, _, _ = p.predict(np.array([[200, 150]]), np.array([1]), mask_input=low, multimask_output=False)
    assert masks.shape == masks2.shape == (1, *image.shape[:2]) and low.shape == (1, 128 // 4, 128 // 4)


def test_layer_decay_and_weight_decay_groups():
    from efficient_sam.training.optim import param_groups

    cfg = load_config(FinetuneConfig, SMOKE, ["train.layer_decay=0.5", "model.overrides={encoder_img_size: 128, encoder_depth: 2}"])
    task = FinetuneTask(cfg)
    task.model_cfg = es.get_config("efficient_sam_vitt", encoder_depth=2)
    model = InteractiveSam(build_finetune_model(cfg.model), cfg.prompt, cfg.loss)
    groups = param_groups(model, 0.1, task.no_weight_decay(), task.layer_id, task.num_layers(), 0.5)
    ids = {n: task.layer_id(n) for n, _ in model.named_parameters()}
    assert ids["sam.image_encoder.pos_embed"] == 0 and ids["sam.image_encoder.patch_embed.proj.weight"] == 0
    assert ids["sam.image_encoder.blocks.1.attn.qkv.weight"] == 2
    assert ids["sam.image_encoder.neck.0.weight"] == ids["sam.mask_decoder.iou_token.weight"] == 3
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    named = dict(model.named_parameters())
    assert id(named["sam.mask_decoder.mask_tokens.weight"]) not in decayed
    assert id(named["sam.prompt_encoder.not_a_point_embed.weight"]) not in decayed
    assert id(named["sam.mask_decoder.transformer.layers.0.mlp.lin1.weight"]) in decayed
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert scale["sam.image_encoder.pos_embed"] == 0.125 and scale["sam.image_encoder.blocks.0.attn.qkv.weight"] == 0.25
    assert scale["sam.image_encoder.blocks.1.norm1.weight"] == 0.5 and scale["sam.mask_decoder.iou_token.weight"] == 1.0
