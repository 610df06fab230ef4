"""SAMI pretraining: masking, decoder, teacher, data, cache, and real training runs on real images."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess  # noqa: F401 - CompletedProcess in annotations
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

import efficient_sam as es
from efficient_sam.training import TrainingError, list_checkpoints, load_config
from pretrain_sami.cross_attention_decoder import sincos_pos_embed_2d
from pretrain_sami.data import ImageFolderViews, StreamingImageViews, collate, open_image_folder
from pretrain_sami.feature_cache import CachedViews
from pretrain_sami.masking import num_visible, random_masking
from pretrain_sami.model import SAMI
from pretrain_sami.teacher import Teacher
from pretrain_sami.train import SamiConfig, SamiTask

from helpers import ROOT, launch, randomize_

SMOKE = ROOT / "pretrain_sami" / "configs" / "smoke.yaml"
TEACHER_OVERRIDES = {"encoder_depth": 2, "encoder_embed_dim": 192, "encoder_num_heads": 3, "encoder_global_attn_indexes": (1,)}
# A smaller student/decoder than smoke.yaml for the many short runs below.
TINY = [
    "student.overrides={encoder_depth: 2}",
    "model.decoder_dim=64", "model.decoder_depth=1", "model.decoder_heads=2",
    "train.batch_size=8", "train.global_batch_size=8", "train.num_workers=0",
    "train.log_every=1", "train.eval_every=null", "data.max_val_images=4",
]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """The smoke teacher architecture with realistic random weights, saved in our format."""
    path = tmp_path_factory.mktemp("teacher")
    model = es.build_model("sam_vit_b", **TEACHER_OVERRIDES)
    randomize_(model.image_encoder, seed=3)
    model.image_encoder.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def run_sami(run_training, asset_paths):
    """`run_sami(out, teacher, *overrides) -> SamiTask`: smoke.yaml on the GrabCut images (val: the photos)."""

    def run(out: Path, teacher: Path, *overrides: str) -> SamiTask:
        return run_training(SamiConfig, SamiTask, SMOKE, [
            f"output_dir={out}", f"teacher.checkpoint={teacher}", f"data.train={asset_paths.grabcut / 'images'}",
            f"data.val={asset_paths.photos}", *overrides
        ])

    return run


# ------------------------------------------------------------------------------------------------
# Masking and decoder


@pytest.mark.parametrize("n", [196, 49, 10, 7])
def test_masking_keeps_round_quarter_and_restores_order(n):
    B, C = 6, 5
    x = torch.randn(B, n, C)
    m = random_masking(B, n, 0.75, generator=torch.Generator().manual_seed(n))
    k = round(0.25 * n)
    assert m.num_visible == num_visible(n, 0.75) == max(1, k)
    visible, masked = m.keep(x), m.select_masked(x)
    assert visible.shape == (B, max(1, k), C) and masked.shape == (B, n - max(1, k), C)
    for b in range(B):  # each sample: distinct positions covering every token once
        ids = torch.cat([m.ids_keep[b], m.ids_masked[b]])
        assert sorted(ids.tolist()) == list(range(n))
        assert torch.equal(visible[b], x[b, m.ids_keep[b]])
    assert torch.equal(m.restore(visible, masked), x)
    assert torch.equal(m.mask.sum(1), torch.full((B,), float(n - m.num_visible)))
    assert torch.equal(m.mask.gather(1, m.ids_keep), torch.zeros(B, m.num_visible))
    assert len({tuple(r) for r in m.ids_keep.tolist()}) == B  # per-sample, not one mask for the batch


def test_masking_from_noise_keeps_lowest_noise():
    noise = torch.rand(3, 196)
    m = random_masking(3, 196, 0.75, noise=noise)
    assert torch.equal(m.ids_keep.sort(1).values, noise.argsort(1)[:, :49].sort(1).values)
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(1, 10, 1.0)


def _tiny_sami(kv: str = "visible_and_masked") -> SAMI:
    enc = es.build_model("efficient_sam_vitt", encoder_depth=2).image_encoder
    return SAMI(enc, teacher_dim=96, grid_size=14, decoder_dim=64, decoder_depth=2, decoder_heads=4, decoder_kv=kv).eval()


@pytest.mark.parametrize("kv", ["visible_and_masked", "visible"])
def test_decoder_queries_are_only_masked_tokens(kv):
    model = _tiny_sami(kv)
    seen = []
    for blk in model.decoder.blocks:
        blk.attn.register_forward_hook(lambda mod, args, out: seen.append((args[0].shape, args[1].shape)))
    img = torch.randn(2, 3, 224, 224)
    pred, m = model(img)
    assert pred.shape == (2, 196, 96)
    for q_shape, kv_shape in seen:
        assert q_shape == (2, 147, 64)  # 196 - 49 masked queries
        assert kv_shape == (2, 49 + (147 if kv == "visible_and_masked" else 0), 64)


def test_student_never_sees_masked_patches():
    model = _tiny_sami()
    img = torch.randn(1, 3, 224, 224)
    noise = torch.rand(1, 196)
    m = random_masking(1, 196, 0.75, noise=noise)
    before = model.encode_visible(img, m)
    changed = img.clone()
    for idx in m.ids_masked[0].tolist():  # scramble every masked 16x16 patch
        r, c = divmod(idx, 14)
        changed[0, :, r * 16 : r * 16 + 16, c * 16 : c * 16 + 16] = torch.randn(3, 16, 16)
    assert torch.equal(model.encode_visible(changed, m), before)
    r, c = divmod(m.ids_keep[0, 0].item(), 14)  # ... while a visible patch matters
    changed[0, :, r * 16 : r * 16 + 16, c * 16 : c * 16 + 16] = 0
    assert not torch.equal(model.encode_visible(changed, m), before)


def test_sincos_position_embedding():
    pe = sincos_pos_embed_2d(64, 14)
    assert pe.shape == (196, 64)
    assert torch.equal(pe[0], torch.cat([torch.zeros(16), torch.ones(16)] * 2))  # sin(0), cos(0)
    assert torch.allclose(pe[1, :32], pe[0, :32]) and not torch.allclose(pe[1, 32:], pe[0, 32:])  # same row


def test_student_loads_unchanged_into_efficient_sam():
    for name in ("efficient_sam_vitt", "efficient_sam_vits"):
        enc = es.get_config(name).image_encoder
        sami = SAMI(es.modeling.image_encoder.ImageEncoderViT(enc), teacher_dim=1280, decoder_depth=1)
        target = es.build_model(name).image_encoder
        sd = sami.encoder.state_dict()
        assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in target.state_dict().items()}
        target.load_state_dict(sd)  # strict
    with pytest.raises(ValueError, match="plain ViT"):
        SAMI(es.build_model("sam_vit_b", encoder_depth=2).image_encoder, teacher_dim=8)


# ------------------------------------------------------------------------------------------------
# Teacher


def test_teacher_at_224_uses_all_weights_and_no_grad(teacher_dir):
    enc = es.from_pretrained(teacher_dir, model="sam_vit_b", **TEACHER_OVERRIDES)
    teacher = Teacher(enc, "pre_neck")
    img = torch.randn(2, 3, 224, 224, requires_grad=True)
    out = teacher(img)
    assert out.shape == (2, 196, 192) and not out.requires_grad
    assert Teacher(enc, "neck")(img).shape == (2, 196, 256)
    teacher.train()
    assert not teacher.training and not teacher.encoder.training
    assert all(not p.requires_grad for p in teacher.parameters())
    # The relative-position tables of the global block (127 long, resized to 27) enter the output.
    with torch.no_grad():
        enc.blocks[1].attn.rel_pos_h.add_(0.5)
    assert not torch.allclose(teacher(img), out)


def test_teacher_from_timm_and_official_sam_files(teacher_dir, tmp_path):
    from safetensors.torch import save_file

    from efficient_sam.checkpoint import to_timm_samvit_layout
    from pretrain_sami.teacher import load_teacher_encoder

    ref = load_file(str(teacher_dir / "model.safetensors"))
    save_file(to_timm_samvit_layout(ref), str(tmp_path / "samvit.safetensors"))  # timm samvit_* layout
    full = es.build_model("sam_vit_b", **TEACHER_OVERRIDES)
    full.image_encoder.load_state_dict(ref)
    torch.save(full.state_dict(), tmp_path / "sam.pth")  # official SAM .pth layout (whole model)
    for src in (tmp_path / "samvit.safetensors", tmp_path / "sam.pth"):
        enc = load_teacher_encoder("sam_vit_b", str(src), TEACHER_OVERRIDES)
        assert all(torch.equal(v, ref[k]) for k, v in enc.state_dict().items())
    with pytest.warns(UserWarning, match="random weights"):
        load_teacher_encoder("sam_vit_b", None, TEACHER_OVERRIDES)


# ------------------------------------------------------------------------------------------------
# Data


def _folder_with_corrupt(tmp_path: Path, asset_paths, n: int = 7) -> Path:
    root = tmp_path / "imgs"
    (root / "class_a").mkdir(parents=True)
    (root / "class_b").mkdir()
    files = sorted((asset_paths.grabcut / "images").glob("*.jpg"))[:n]
    for i, f in enumerate(files):
        shutil.copy(f, root / ("class_a" if i % 2 else "class_b") / f.name)
    shutil.copy(asset_paths.photos / "hq_example6.png", root / "class_a" / "rgba.png")  # RGBA is converted
    (root / "class_b" / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_corrupt_image_is_skipped_and_counted(tmp_path, asset_paths):
    root = _folder_with_corrupt(tmp_path, asset_paths)
    ds = ImageFolderViews(open_image_folder(root), size=224, num_tokens=196, seed=0)
    assert len(ds) == 9
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        items = [ds[i] for i in range(len(ds))]
    assert sum(it["skipped"] for it in items) == 1
    batch = collate(items)
    assert batch["image"].shape == (9, 3, 224, 224) and torch.isfinite(batch["image"]).all()
    assert batch["noise"].shape == (9, 196) and int(batch["skipped"]) == 1
    # The same sample is the same wherever and whenever it is read (resume/process independent).
    again = ImageFolderViews(open_image_folder(root), size=224, num_tokens=196, seed=0)
    assert torch.equal(again[3]["image"], items[3]["image"]) and torch.equal(again[3]["noise"], items[3]["noise"])
    again.set_epoch(1)
    assert not torch.equal(again[3]["image"], items[3]["image"])

    stream = StreamingImageViews(open_image_folder(root, streaming=True), 224, 196, seed=0, shuffle_buffer=4)
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        got = list(stream)
    assert len(got) == 8 and sum(g["skipped"] for g in got) == 1


def test_skipped_images_counts_files_not_skip_events(tmp_path, asset_paths):
    """2 unreadable files in a row: `skipped` sums to 2 per epoch (each file counted by its own index),
    not 3 (index i also tried file i + 1); each file is warned about once."""
    good = sorted((asset_paths.grabcut / "images").glob("*.jpg"))[:3]
    for name in ("bad1.jpg", "bad2.jpg"):
        (tmp_path / name).write_bytes(b"not a jpeg")
    paths = [good[0], tmp_path / "bad1.jpg", tmp_path / "bad2.jpg", good[1], good[2]]
    rows = [{"image": {"path": str(p), "bytes": None}} for p in paths]
    ds = ImageFolderViews(rows, size=224, num_tokens=196, seed=0)
    for epoch in range(2):
        ds.set_epoch(epoch)
        with pytest.warns(UserWarning, match="bad") if epoch == 0 else contextlib.nullcontext():
            items = [ds[i] for i in range(len(ds))]
        assert [it["skipped"] for it in items] == [0, 1, 1, 0, 0] and int(collate(items)["skipped"]) == 2


def test_training_skips_corrupt_image(tmp_path, teacher_dir, asset_paths, run_sami, read_metrics):
    root = _folder_with_corrupt(tmp_path, asset_paths)
    # batch = whole folder: every index is read once per step, so the count is exact.
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        run_sami(out, teacher_dir, *TINY, f"data.train={root}", "train.batch_size=9", "train.global_batch_size=9", "train.max_steps=2")
    rows = [r for r in read_metrics(out) if "loss" in r]
    assert [r["data/skipped_images"] for r in rows] == [1, 2]
    assert (out / "final" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------------
# Training runs


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, teacher_dir, run_sami):
    out = tmp_path_factory.mktemp("sami_smoke")
    task = run_sami(out, teacher_dir, "train.eval_at_start=true", "train.num_workers=0")
    return out, task


@pytest.mark.slow
def test_smoke_run_learns(smoke_run, read_metrics):
    out, _ = smoke_run
    rows = read_metrics(out)
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [r for r in rows if "eval/cosine" in r]
    assert losses[-1] <= 0.5 * losses[0], losses
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert evals[-1]["eval/cosine"] > evals[0]["eval/cosine"] + 0.2, evals
    assert evals[-1]["eval/mse"] < evals[0]["eval/mse"]
    for key in ("step", "epoch", "loss", "lr", "samples_per_s"):
        assert key in rows[1]
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    cfg = load_config(SamiConfig, out / "config.yaml")  # the resolved config reloads as is
    assert cfg.train.max_steps == 60 and cfg.output_dir == str(out)


@pytest.mark.slow
def test_smoke_run_teacher_untouched_and_final_loads(smoke_run, teacher_dir):
    out, task = smoke_run
    saved = load_file(str(teacher_dir / "model.safetensors"))
    now = task.teacher.encoder.state_dict()
    assert set(saved) == set(now) and all(torch.equal(saved[k], now[k].cpu()) for k in saved)
    assert all(p.grad is None and not p.requires_grad for p in task.teacher.parameters())
    enc = es.from_pretrained(out / "final")
    model = es.build_model("efficient_sam_vitt", encoder_depth=4, encoder_checkpoint=out / "final")
    for k, v in enc.state_dict().items():
        assert torch.equal(model.image_encoder.state_dict()[k], v)
    with pytest.raises(es.CheckpointError, match="missing keys"):
        es.build_model("efficient_sam_vitt", encoder_checkpoint=out / "final")  # 4 blocks vs 12


def test_teacher_gets_no_gradient(teacher_dir, asset_paths, fresh_accelerate_state):
    cfg = load_config(SamiConfig, SMOKE, [f"teacher.checkpoint={teacher_dir}", f"data.train={asset_paths.grabcut / 'images'}",
                                          *TINY])
    task = SamiTask(cfg)
    task.setup(Accelerator(cpu=True))
    model = task.build_model()
    batch = collate([task.train_set[i] for i in range(2)])
    losses, _ = task.training_step(model, batch)
    losses["loss"].backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.slow
def test_resume_is_bitwise_identical(tmp_path, teacher_dir, run_sami, read_metrics):
    common = [*TINY, "train.max_steps=8", "train.save_every=3", "train.keep_checkpoints=2", "train.num_workers=1"]
    run_sami(tmp_path / "a", teacher_dir, *common)
    b = tmp_path / "b"
    run_sami(b, teacher_dir, *common, "train.stop_after=4")  # "killed" after step 4
    assert not (b / "final").exists()
    assert [p.name for p in list_checkpoints(b)] == ["step_3", "step_4"]
    run_sami(b, teacher_dir, *common, "resume=auto")
    assert [p.name for p in list_checkpoints(b)] == ["step_6", "step_8"]
    wa = load_file(str(tmp_path / "a" / "checkpoints" / "step_8" / "model.safetensors"))
    wb = load_file(str(b / "checkpoints" / "step_8" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    fa, fb = load_file(str(tmp_path / "a" / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    steps = [r["step"] for r in read_metrics(b) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 8  # no duplicated rows after the resume


@pytest.mark.slow
def test_gradient_accumulation_matches_large_batch(tmp_path, teacher_dir, run_sami):
    run_sami(tmp_path / "big", teacher_dir, *TINY, "train.max_steps=3", "train.batch_size=8", "train.global_batch_size=8")
    run_sami(tmp_path / "acc", teacher_dir, *TINY, "train.max_steps=3", "train.batch_size=4", "train.global_batch_size=8")
    a = load_file(str(tmp_path / "big" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "acc" / "final" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_streaming_run_trains(tmp_path, teacher_dir, run_sami, read_metrics):
    out = tmp_path / "s"
    run_sami(out, teacher_dir, *TINY, "data.streaming=true", "data.num_train_examples=50", "train.max_steps=null", "train.epochs=2")
    rows = [r for r in read_metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 13))  # 50 // 8 = 6 steps per epoch
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (out / "final" / "model.safetensors").is_file()


def test_fresh_run_refuses_a_folder_with_checkpoints(tmp_path, teacher_dir, run_sami):
    run_sami(tmp_path / "r", teacher_dir, *TINY, "train.max_steps=2")
    with pytest.raises(TrainingError, match="resume=auto"):
        run_sami(tmp_path / "r", teacher_dir, *TINY, "train.max_steps=2")


def test_nan_loss_stops_with_clear_message(tmp_path, teacher_dir, run_sami):
    with pytest.raises(TrainingError, match=r"loss is (nan|inf).*stopped before the update"):
        run_sami(tmp_path / "nan", teacher_dir, *TINY, "train.max_steps=20", "train.lr=1e30", "train.warmup_steps=0")


@pytest.mark.slow
def test_feature_cache_matches_teacher_and_is_reused(tmp_path, teacher_dir, run_sami):
    out = tmp_path / "c"
    common = [*TINY, "cache.enabled=true", "cache.views=2", "train.max_steps=3", "cache.shard_rows=16"]
    with pytest.warns(UserWarning, match="replace the random crops"):
        task = run_sami(out, teacher_dir, *common)
    index = json.loads((out / "teacher_cache" / "index.json").read_text())
    assert index["valid"] == 100 and index["views"] == 2 and len(index["shards"]) == 7
    ds = task.train_set
    assert isinstance(ds, CachedViews) and len(ds) == 100
    items = [ds[j] for j in (0, 57, 99)]
    for it in items:
        assert it["target"].dtype == torch.float16 and it["target"].shape == (196, 192)
        fresh = task.teacher(it["image"][None])[0]
        torch.testing.assert_close(it["target"].float(), fresh, rtol=2e-3, atol=2e-3)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "teacher_cache").iterdir()}
    shared = f"cache.dir={out / 'teacher_cache'}"
    run_sami(tmp_path / "c2", teacher_dir, *common, shared, "train.max_steps=4")  # same fingerprint: reused
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (out / "teacher_cache").iterdir()}
    with pytest.raises(Exception, match="different setup.*views"):
        run_sami(tmp_path / "c3", teacher_dir, *common, shared, "cache.views=1")


def _launch(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    return launch("pretrain_sami.train", args, nproc)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_cpu_run_matches_one_process(tmp_path, teacher_dir, asset_paths, read_metrics):
    common = ["--config", str(SMOKE), f"teacher.checkpoint={teacher_dir}", f"data.train={asset_paths.grabcut / 'images'}",
              f"data.val={asset_paths.photos}", *TINY, "train.max_steps=4", "train.global_batch_size=8"]
    two = _launch([*common, f"output_dir={tmp_path / 'two'}", "train.batch_size=4"], 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout + two.stderr
    one = _launch([*common, f"output_dir={tmp_path / 'one'}", "train.batch_size=8"], 1)
    assert one.returncode == 0, one.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    for k in a:  # same global batches, gradients averaged over the two processes
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    rows = read_metrics(tmp_path / "two")
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize(
    "override, message",
    [
        ("student.overrides={encoder_dept: 2}", "student: .*unknown override 'encoder_dept'"),
        ("teacher.model=sam_vit_x", "teacher: .*unknown model 'sam_vit_x'"),
        ("data.input_size=200", "multiple of the 16-px patch"),
        ("teacher.target=middle", "teacher.target must be one of"),
    ],
)
def test_bad_sami_config_is_a_clear_error(tmp_path, override, message, capsys, asset_paths, fresh_accelerate_state):
    from pretrain_sami.train import main

    with pytest.raises(SystemExit) as e:
        main(["--config", str(SMOKE), f"output_dir={tmp_path}", f"data.train={asset_paths.grabcut / 'images'}", "data.val=null",
              override])
    assert re.search(message, str(e.value)), e.value


def test_paper_configs_resolve_to_the_recipe():
    for name, student in (("vit_tiny", "efficient_sam_vitt"), ("vit_small", "efficient_sam_vits")):
        cfg = load_config(SamiConfig, ROOT / "pretrain_sami" / "configs" / f"{name}.yaml")
        t = cfg.train
        assert (t.epochs, t.warmup_epochs, t.global_batch_size, t.blr) == (400, 40, 4096, 1.5e-4)
        assert t.blr * t.global_batch_size / 256 == pytest.approx(2.4e-3)
        assert (t.betas, t.weight_decay, t.optimizer, t.lr_schedule) == ((0.9, 0.95), 0.05, "adamw", "cosine")
        assert cfg.model.mask_ratio == 0.75 and (cfg.model.decoder_depth, cfg.model.decoder_dim, cfg.model.decoder_heads) == (8, 512, 16)
        assert cfg.student.model == student and cfg.teacher.model == "sam_vit_h" and cfg.teacher.target == "pre_neck"
        assert cfg.data.input_size == 224 and cfg.data.scale == (0.2, 1.0)
