"""Single-prompt evaluation of promptable models (the library behind `esam-eval` and the trainers'
evaluation rows).

| module | what |
|---|---|
| `metrics` | mask IoU and boundary IoU (HQ-SAM / Cheng et al.) with ignore masks |
| `prompts` | the prompt protocol: box / 1 point / 3 points per object, seeded per object, which mask is scored |
| `models` | the `PromptModel` interface, `PredictorModel` (any `Sam`), the oracle baselines, `load_model` |
| `loop` | `evaluate` (mIoU, boundary IoU, per-object rows) and `evaluate_distributed` (over accelerate's processes) |

Models plug in through `PromptModel.predict_batch(image, boxes=, points=, labels=, multimask_output=)`
-> (masks (K, H, W) bool, scores (K,)): with `multimask_output` the model returns its most confident
mask per prompt. `oracle:gt` (the ground truth) and `oracle:box` (the filled box) are sanity baselines.
"""

from efficient_sam.precision import DTYPES

from .loop import evaluate, evaluate_distributed
from .metrics import boundary_iou, boundary_width, mask_iou, mask_to_boundary, nanmean
from .models import ORACLES, BoxOracle, GroundTruthOracle, PredictorModel, PromptModel, load_model
from .prompts import PROMPTS, make_prompts, object_rng, sample_points, use_multimask

__all__ = [
    "DTYPES", "PROMPTS", "use_multimask", "object_rng", "sample_points", "make_prompts",
    "PromptModel", "PredictorModel", "GroundTruthOracle", "BoxOracle", "ORACLES", "load_model",
    "evaluate", "evaluate_distributed",
    "boundary_width", "mask_to_boundary", "mask_iou", "boundary_iou", "nanmean",
]
