"""Evaluation of promptable models, the library behind `esam-eval` (its `--protocol`s) and the trainers'
evaluation rows.

| module | what |
|---|---|
| `metrics` | mask IoU and boundary IoU (HQ-SAM / Cheng et al.) with ignore masks |
| `prompts` | the prompt protocol: box / 1 point / 3 points per object, seeded per object, which mask is scored |
| `models` | the `PromptModel` interface, `PredictorModel` (any `Sam`), the oracle baselines, `load_model` |
| `loop` | `evaluate` (mIoU, boundary IoU, per-object rows) and `evaluate_distributed` (over accelerate's processes) |
| `clicks` | the interactive-click protocol (RITM / SimpleClick): clicker, model rules, NoC@85/90/95, NoF, mIoU@k |
| `coco` | COCO / LVIS: GT-box / 1-point mIoU by object size, zero-shot instance AP and Boundary AP (COCOeval) |
| `everything` | the mask generator: mask recall AR@100/1000 (COCOeval), agreement of two generators' outputs |

Models plug in through `PromptModel.predict_batch(image, boxes=, points=, labels=, multimask_output=)`
-> (masks (K, H, W) bool, scores (K,)): with `multimask_output` the model returns its most confident
mask per prompt. `oracle:gt` (the ground truth) and `oracle:box` (the filled box) are sanity baselines.
"""

from efficient_sam.precision import DTYPES

from .loop import evaluate, evaluate_distributed
from .metrics import boundary_iou, boundary_width, mask_iou, mask_to_boundary, nanmean
from .models import ORACLES, BoxOracle, GroundTruthOracle, PredictorModel, PromptModel, load_model
from .prompts import PROMPTS, make_prompts, object_rng, sample_points, use_multimask
from .clicks import evaluate_clicks, next_click
from .coco import evaluate_coco, evaluate_coco_distributed
from .everything import agreement, evaluate_everything, mask_recall, match_masks

__all__ = [
    "DTYPES", "PROMPTS", "use_multimask", "object_rng", "sample_points", "make_prompts",
    "PromptModel", "PredictorModel", "GroundTruthOracle", "BoxOracle", "ORACLES", "load_model",
    "evaluate", "evaluate_distributed",
    "evaluate_clicks", "next_click", "evaluate_coco", "evaluate_coco_distributed",
    "agreement", "evaluate_everything", "mask_recall", "match_masks",
    "boundary_width", "mask_to_boundary", "mask_iou", "boundary_iou", "nanmean",
]
