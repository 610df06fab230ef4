"""The models the evaluation loop scores: the `PromptModel` interface, `PredictorModel` (any `Sam`
behind `SamPredictor`), the oracle baselines, and `load_model` (a name, folder, file or Hub id ->
a `PromptModel`)."""

from __future__ import annotations

import difflib
import os
import warnings
from typing import Protocol

import numpy as np
import torch

from efficient_sam import transforms
from efficient_sam.precision import DTYPES

__all__ = ["PromptModel", "PredictorModel", "GroundTruthOracle", "BoxOracle", "ORACLES", "load_model"]


class PromptModel(Protocol):
    """What the evaluation loop calls. `family` is "sam", "efficient_sam" or anything else (oracles).

    `predict_batch` gets K prompts for one image, all in original-image pixels: boxes (K, 4) XYXY, or
    points (K, N, 2) XY with labels (K, N). It returns masks (K, H, W) bool and scores (K,); with
    `multimask_output=True` the model picks its most confident mask per prompt. Models that set
    `uses_targets = True` (oracle baselines only) also receive `targets=` (K, H, W) ground truth.
    """

    family: str

    def predict_batch(
        self,
        image: np.ndarray,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]: ...


class PredictorModel:
    """A `Sam` model behind `SamPredictor`: the image is encoded once, then each batch of prompts goes
    through one decoder call; the best mask is chosen on the low-res logits before upsampling."""

    uses_targets = False

    def __init__(self, model, hq_token_only: bool = False) -> None:
        from efficient_sam import SamPredictor

        if hq_token_only and not getattr(model, "is_hq", False):
            raise ValueError("hq_token_only needs an HQ model")
        self.model = model
        self.hq = dict(hq_features=None, hq_token_only=hq_token_only) if getattr(model, "is_hq", False) else None
        self.family = model.config.decoder_family  # decides which output is scored
        self.predictor = SamPredictor(model)
        self._image = None

    @torch.inference_mode()
    def predict_batch(self, image, boxes=None, points=None, labels=None, multimask_output=True):
        p, cfg = self.predictor, self.model.config
        if self._image is not image:
            p.set_image(image)
            self._image = image
        size, dev = p.original_size, p.device
        coords = labs = bx = None
        if points is not None:
            coords = transforms.transform_coords(torch.as_tensor(points, dtype=torch.float32).to(dev), size, cfg)
            labs = torch.as_tensor(labels, dtype=torch.long).to(dev)
        if boxes is not None:
            bx = transforms.transform_boxes(torch.as_tensor(boxes, dtype=torch.float32).to(dev), size, cfg)
        hq = {} if self.hq is None else {**self.hq, "hq_features": p.hq_features}
        low, iou = self.model.decode(p.features, coords, labs, bx, None, multimask_output, **hq)
        best = iou.argmax(dim=1)
        rows = torch.arange(low.shape[0], device=low.device)
        low, score = low[rows, best], iou[rows, best]
        masks = transforms.postprocess_masks(low[:, None].float(), size, cfg)[:, 0] > self.model.mask_threshold
        return masks.cpu().numpy(), score.float().cpu().numpy()


class GroundTruthOracle:
    """Returns the ground truth: IoU 1 by construction (checks the evaluation plumbing)."""

    family = "oracle"
    uses_targets = True

    def predict_batch(self, image, boxes=None, points=None, labels=None, multimask_output=True, targets=None):
        if targets is None:
            raise ValueError("the ground-truth oracle needs targets=")
        return np.asarray(targets, dtype=bool), np.ones(len(targets), dtype=np.float32)


class BoxOracle:
    """Returns the prompt box filled (the 'tight box as mask' baseline of the GrabCut data's README)."""

    family = "oracle"
    uses_targets = False

    def predict_batch(self, image, boxes=None, points=None, labels=None, multimask_output=True):
        if boxes is None:
            raise ValueError("the box oracle needs box prompts (--prompt box)")
        h, w = image.shape[:2]
        out = np.zeros((len(boxes), h, w), dtype=bool)
        for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes)):
            out[k, int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
        return out, np.ones(len(boxes), dtype=np.float32)


ORACLES = {"oracle:gt": GroundTruthOracle, "oracle:box": BoxOracle}


def _did_you_mean(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _fmt(overrides: dict) -> str:
    return " ".join(f"{k}={v!r}" for k, v in overrides.items())


def load_model(
    name: str, checkpoint: str | None, overrides: dict, device: str, dtype: str, hq: bool = False
) -> PromptModel:
    """`esam-eval --model`: an oracle name, a registered name (with `checkpoint` and `overrides`), or
    anything `efficient_sam.from_pretrained` takes; `dtype` a key of `DTYPES`; `hq`: score an HQ
    model's HQ output alone. Bad arguments raise `SystemExit` with the CLI's message."""
    if name in ORACLES:
        if checkpoint or overrides:
            raise SystemExit(f"esam-eval: {name} takes no --checkpoint / --set")
        return ORACLES[name]()
    import efficient_sam as es
    from efficient_sam.errors import CheckpointError

    names = es.list_models()
    if name.startswith("oracle:"):
        raise SystemExit(f"esam-eval: --model {name}: unknown oracle{_did_you_mean(name, list(ORACLES))}; "
                         f"the oracles are {', '.join(ORACLES)}")
    if name in names:
        try:
            model = es.build_model(name, checkpoint=checkpoint, **overrides)
        except (CheckpointError, OSError) as e:
            if checkpoint is None:
                raise
            raise SystemExit(f"esam-eval: --checkpoint {checkpoint}: {e}") from None
        except (TypeError, ValueError, KeyError) as e:
            if not overrides:
                raise
            raise SystemExit(f"esam-eval: --set {_fmt(overrides)}: {e}") from None
        if checkpoint is None:
            warnings.warn(f"esam-eval: {name} has random weights (no --checkpoint given)", stacklevel=2)
    else:
        local = os.path.exists(name)
        if checkpoint or overrides:
            what = "a local path" if local else f"not a registered model{_did_you_mean(name, names)}"
            raise SystemExit(f"esam-eval: --checkpoint / --set apply to registered model names only; {name} is "
                             f"{what} (registered: {', '.join(names)})")
        from_pretrained = getattr(es, "from_pretrained", None)
        if from_pretrained is None:
            raise SystemExit(
                f"esam-eval: {name!r} is not a registered model ({', '.join(names)}) and "
                f"efficient_sam.from_pretrained is not available"
            )
        try:
            model = from_pretrained(name)
        except (CheckpointError, OSError, ValueError) as e:
            if local:
                raise SystemExit(f"esam-eval: --model {name}: {e}") from None
            raise SystemExit(
                f"esam-eval: --model {name}: {name} is not a registered model{_did_you_mean(name, names)} "
                f"nor a local path (registered: {', '.join(names)}; oracles: {', '.join(ORACLES)}); "
                f"as a Hub repo: {e}"
            ) from None
    if getattr(model, "config", None) is None or not hasattr(model, "decode"):
        raise SystemExit(f"esam-eval: {name!r} did not load a promptable model (got {type(model).__name__})")
    model = model.to(device=device, dtype=DTYPES[dtype]).eval()
    if hq and not getattr(model, "is_hq", False):
        raise SystemExit(f"esam-eval: --hq needs an HQ model; {name!r} is not one")
    return PredictorModel(model, hq_token_only=hq)
