"""HQ adapter training on real photos: only the adapter learns (base bit-identical, small
checkpoints), the HQ output beats the frozen base, resume, exports, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import efficient_sam as es
from efficient_sam.training import list_checkpoints, load_config
from hq_adapter import build_hq_model
from hq_adapter.train import HQTask, HQTrainConfig
from helpers import ROOT, randomize_

SMOKE = ROOT / "hq_adapter" / "configs" / "smoke.yaml"
OVER = {"encoder_img_size": 256, "encoder_depth": 4}


@pytest.fixture(scope="module")
def run_hq(run_training, asset_paths):
    """`run_hq(out, *overrides) -> HQTask`: smoke.yaml on the GrabCut photos."""
    grabcut = asset_paths.grabcut

    def run(out: Path, *overrides: str) -> HQTask:
        return run_training(HQTrainConfig, HQTask, SMOKE, [f"output_dir={out}", f"data.train={grabcut}", f"data.val={grabcut}", *overrides])

    return run


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """The smoke base (EfficientSAM-Ti, 4 blocks, 256 px) with realistic random weights, saved."""
    path = tmp_path_factory.mktemp("base")
    randomize_(es.build_model("efficient_sam_vitt", **OVER), seed=0).save_pretrained(path)
    return path


@pytest.mark.slow
def test_smoke_run_trains_only_the_adapter_and_beats_the_base(tmp_path, base_dir, run_hq, read_metrics):
    out = tmp_path / "hq"
    task = run_hq(out, f"model.base_checkpoint={base_dir}")
    rows = read_metrics(out)
    evals = [r for r in rows if "eval/biou_hq" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    last = evals[-1]
    assert last["eval/biou_hq"] > last["eval/biou_base"] and last["eval/biou_hq"] > evals[0]["eval/biou_hq"] + 0.05
    assert last["eval/miou_hq"] > last["eval/miou_base"]
    assert len({r["eval/biou_base"] for r in evals}) == 1  # the frozen base never changes
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    # The base weights are bit-identical to the file; the adapter changed.
    base = es.from_pretrained(base_dir).state_dict()
    trained = task.sam.state_dict()
    assert all(torch.equal(trained[k].cpu(), v) for k, v in base.items())
    fresh = build_hq_model("efficient_sam_vitt", base_checkpoint=base_dir, **OVER)
    assert not torch.equal(fresh.mask_decoder.hf_mlp.layers[0].weight, trained["mask_decoder.hf_mlp.layers.0.weight"].cpu())
    # Checkpoints hold the adapter only (25 tensors, 481,280 parameters), not the 10M-parameter base.
    ck = load_file(str(list_checkpoints(out)[-1] / "model.safetensors"))
    assert len(ck) == 25 and sum(v.numel() for v in ck.values()) == 284_672 + 1024 * 192
    # Exports: the merged model, and the adapter + base reference; both give the trained model.
    merged = es.from_pretrained(out / "final")
    again = build_hq_model("efficient_sam_vitt", checkpoint=out / "final" / "adapter")
    for m in (merged, again):
        assert m.is_hq and all(torch.equal(v, trained[k].cpu()) for k, v in m.state_dict().items())


def test_resume_is_bitwise_identical(tmp_path, base_dir, run_hq):
    common = [f"model.base_checkpoint={base_dir}", "train.max_steps=4", "train.save_every=2", "train.eval_every=null",
              "train.eval_at_start=false", "train.batch_size=4", "train.global_batch_size=4", "train.num_workers=1",
              "data.max_val_images=1"]
    run_hq(tmp_path / "a", *common)
    run_hq(tmp_path / "b", *common, "train.stop_after=3")
    run_hq(tmp_path / "b", *common, "resume=auto")
    a = load_file(str(tmp_path / "a" / "final" / "adapter" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "b" / "final" / "adapter" / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_paper_configs_resolve_to_the_recipe():
    for name, base in (("sam_vit_l", "sam_vit_l"), ("efficient_sam_vitt", "efficient_sam_vitt")):
        cfg = load_config(HQTrainConfig, ROOT / "hq_adapter" / "configs" / f"{name}.yaml")
        t = cfg.train
        assert (t.optimizer, t.lr, t.weight_decay, t.epochs, t.global_batch_size) == ("adam", 1e-3, 0.0, 12, 32)
        assert (t.lr_schedule, t.lr_milestones, t.lr_gamma) == ("step", (10,), 0.1)
        assert cfg.model.base == base and cfg.data.scale == (0.1, 2.0) and cfg.data.hflip == 0.5
        assert (cfg.loss.num_points, cfg.loss.oversample_ratio, cfg.loss.importance_sample_ratio) == (12544, 3.0, 0.75)
        assert t.mixed_precision == "no"


def test_too_many_points_for_the_efficient_sam_decoder_is_a_clear_error(tmp_path):
    from hq_adapter.train import main

    with pytest.raises(SystemExit, match="at most 6 points"):
        main(["--config", str(SMOKE), f"output_dir={tmp_path}", "data.num_points=10"])


@pytest.mark.distributed
def test_two_process_cpu_run_trains_the_adapter(tmp_path, base_dir, asset_paths, read_metrics):
    from helpers import launch

    args = ["--config", str(SMOKE), f"output_dir={tmp_path / 'two'}", f"data.train={asset_paths.grabcut}",
            f"data.val={asset_paths.grabcut}",
            f"model.base_checkpoint={base_dir}", "train.max_steps=6", "train.batch_size=4", "train.log_every=1",
            "train.eval_every=null", "train.eval_at_start=false", "data.max_val_images=2"]
    res = launch("hq_adapter.train", args, 2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "4 x 2 process(es)" in res.stdout + res.stderr
    rows = [r for r in read_metrics(tmp_path / "two") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(r["loss"] == r["loss"] for r in rows)
    assert build_hq_model("efficient_sam_vitt", checkpoint=tmp_path / "two" / "final" / "adapter").is_hq
