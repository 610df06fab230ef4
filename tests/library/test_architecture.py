"""The import graph over the source tree: layers flow one way, no circles, and the inference modules
need only the base install."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("efficient_sam", "pretrain_sami", "finetune", "hq_adapter", "benchmarks")
TRAINERS = ("pretrain_sami", "finetune", "hq_adapter")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if "configs" not in p.parts
}


def _target(name: str) -> str | None:
    """The most specific module of ours that `name` (a module or a name in one) refers to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """Every module of ours that `module` imports, at the top or inside a function (the implicit import
    of a parent package's `__init__` is not an edge: `efficient_sam/__init__` re-exports the layers)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]  # a name that is not a module resolves to `base`
        else:
            continue
        found |= {t for n in names if (t := _target(n)) is not None and t != module}
    return found


GRAPH = {m: imports(m) for m in MODULES}


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_library_never_imports_a_trainer_or_benchmarks():
    bad = [(m, t) for m, ts in GRAPH.items() if _top(m) == "efficient_sam" for t in ts if _top(t) != "efficient_sam"]
    assert not bad, f"efficient_sam imports from above it: {bad}"


def test_trainers_import_neither_each_other_nor_benchmarks():
    bad = [
        (m, t) for m, ts in GRAPH.items() if _top(m) in TRAINERS for t in ts
        if _top(t) != _top(m) and _top(t) != "efficient_sam"
    ]
    assert not bad, f"a trainer imports another trainer or benchmarks: {bad}"


def test_modeling_imports_only_config():
    bad = [
        (m, t) for m, ts in GRAPH.items() if m.startswith("efficient_sam.modeling") for t in ts
        if not t.startswith("efficient_sam.modeling") and t != "efficient_sam.config"
    ]
    assert not bad, f"efficient_sam.modeling imports from above it: {bad}"


def test_registry_is_a_leaf():
    assert GRAPH["efficient_sam.registry"] <= {"efficient_sam.config", "efficient_sam.errors"}
    assert GRAPH["efficient_sam.errors"] == set() and GRAPH["efficient_sam.config"] == set()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_sees_imports_inside_functions():
    assert "efficient_sam.evaluation" in GRAPH["finetune.train"] or any(
        t.startswith("efficient_sam.evaluation") for t in GRAPH["finetune.train"]
    )


EXTRAS = ("accelerate", "datasets", "tensorboard", "fvcore", "matplotlib", "segment_anything",
          "segment_anything_hq", "pycocotools", "cv2", "transformers")  # torchvision comes with timm

BASE_INSTALL_SCRIPT = f"""
import importlib.abc, sys
BLOCKED = {EXTRAS!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not part of the base install")
sys.meta_path.insert(0, Block())
import numpy as np
import efficient_sam as es
import efficient_sam.tools.predict, efficient_sam.tools.convert, efficient_sam.tools.amg
model = es.build_model("efficient_sam_vitt", encoder_depth=2)
p = es.SamPredictor(model)
p.set_image(np.zeros((40, 60, 3), np.uint8))
masks, iou, _ = p.predict(point_coords=np.array([[30, 20]]), point_labels=np.array([1]))
hq = es.build_hq_model("sam_vit_b", encoder_depth=2, encoder_embed_dim=64, encoder_num_heads=2,
                       encoder_global_attn_indexes=(1,))
records = es.SamAutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0).generate(np.zeros((40, 60, 3), np.uint8))
print("ok", masks.shape, sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_inference_needs_only_the_base_install():
    """Importing efficient_sam, SamPredictor and the mask generator's default output work with the
    [train]/[bench]/[amg]/[dev] packages blocked."""
    r = subprocess.run([sys.executable, "-c", BASE_INSTALL_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok (3, 40, 60) []"), r.stdout


@pytest.mark.parametrize("blocked", ["accelerate", "datasets"])
def test_the_base_install_check_can_fail(blocked):
    script = BASE_INSTALL_SCRIPT.replace("import numpy as np", f"import numpy as np\nimport {blocked}")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "not part of the base install" in r.stderr
