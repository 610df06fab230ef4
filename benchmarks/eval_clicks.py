"""`esam-eval --protocol clicks`: the interactive-click protocol (NoC@85/90/95, NoF, mIoU@k) and its plot.

The protocol itself is `efficient_sam.evaluation.clicks` (clicker, model rules, metrics). Here: the
command-line options (`add_arguments`), the run over the records with a progress bar (`run`), and the
plot of mIoU against the number of clicks, one line per model, drawn with PIL (`plot_clicks`).
Several result JSONs in one plot:

    python -m benchmarks.eval_clicks sam.json esam.json --out clicks.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image, ImageDraw

from efficient_sam.evaluation.clicks import THRESHOLDS, evaluate_clicks

from .report import font as report_font

__all__ = ["add_arguments", "run", "plot_clicks", "main"]

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127)]


def _max_clicks(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not >= 1")
    return v


def _iou(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and 0 < v <= 1):
        raise argparse.ArgumentTypeError(f"{text} is not an IoU in (0, 1]")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The click protocol's options: --max-clicks, --thresholds, --feed-logits / --no-feed-logits, --plot."""
    g = parser.add_argument_group("clicks protocol")
    g.add_argument("--max-clicks", type=_max_clicks, default=20, help="clicks per object at most (default 20)")
    g.add_argument("--thresholds", type=_iou, nargs="+", default=list(THRESHOLDS), metavar="IOU",
                   help="IoU thresholds of NoC / NoF (default 0.85 0.90 0.95); clicking stops at the highest")
    g.add_argument("--feed-logits", action=argparse.BooleanOptionalAction, default=None,
                   help="SAM decoder: feed the previous click's low-res logits as mask_input "
                        "(default on for models with a mask prompt; EfficientSAM has none)")
    g.add_argument("--plot", default=None, metavar="PATH",
                   help="PNG of mIoU vs clicks (default: next to --json, same name with .png)")


def run(args: argparse.Namespace, model, records: Sequence) -> dict[str, Any]:
    """The protocol on `records` with a progress bar -> the results dict of `evaluate_clicks`; writes
    the plot to `args.plot` (or next to `args.json`). `model`: a click model, an oracle name
    (`oracle:gt`, `oracle:empty`), a `PredictorModel` from `load_model` or a `Sam`."""
    res = evaluate_clicks(model, records, max_clicks=args.max_clicks, thresholds=args.thresholds,
                          feed_logits=args.feed_logits, progress=not getattr(args, "no_progress", False))
    plot = args.plot
    if plot is None and getattr(args, "json", None):
        plot = str(Path(args.json).with_suffix(".png"))
    if plot:
        label = str(getattr(args, "model", None) or type(model).__name__)
        if res["rules"].get("feed_logits"):
            label += " (feed logits)"
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        plot_clicks({label: res["miou_at_clicks"]}, plot, title=f"mIoU vs clicks ({getattr(args, 'data', '')})")
        res["plot"] = plot
    return res


def plot_clicks(curves: Mapping[str, Sequence[float]], path: str | Path,
                title: str = "mIoU vs number of clicks") -> None:
    """One line per model: `curves` = {label: [mIoU@1, mIoU@2, ...]} -> a PNG at `path` (PIL only)."""
    W, H, L, R, T, B = 900, 600, 70, 30, 50, 60
    im = Image.new("RGB", (W, H), "white")
    d, font = ImageDraw.Draw(im), report_font()
    d.text((L, 15), title, fill="black", font=font)
    n = max((len(v) for v in curves.values()), default=1)

    def px(k: float) -> float:  # k = 1..n clicks
        return L + (k - 1) / max(n - 1, 1) * (W - L - R)

    def py(v: float) -> float:  # IoU 0..1
        return H - B - v * (H - T - B)

    for i in range(11):
        y = py(i / 10)
        d.line([(L, y), (W - R, y)], fill=(170, 170, 170) if i % 5 == 0 else (225, 225, 225))
        d.text((L - 35, y - 7), f"{i / 10:.1f}", fill="black", font=font)
    for k in range(1, n + 1):
        if n <= 20 or k % 5 == 0 or k == 1:
            d.line([(px(k), T), (px(k), H - B)], fill=(235, 235, 235))
            d.text((px(k) - 4, H - B + 8), str(k), fill="black", font=font)
    d.rectangle([L, T, W - R, H - B], outline="black")
    d.text(((L + W - R) // 2 - 50, H - 30), "number of clicks", fill="black", font=font)
    d.text((8, T - 18), "mIoU", fill="black", font=font)
    for j, (label, ys) in enumerate(curves.items()):
        c = COLORS[j % len(COLORS)]
        pts = [(px(k + 1), py(v)) for k, v in enumerate(ys) if math.isfinite(v)]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
        ly = H - B - 20 - 18 * (len(curves) - 1 - j)  # legend bottom right, inside the frame
        d.line([(W - R - 250, ly + 7), (W - R - 230, ly + 7)], fill=c, width=3)
        d.text((W - R - 224, ly), label, fill="black", font=font)
    im.save(path)


def main(argv: list[str] | None = None) -> int:
    """Plot several results JSONs of the click protocol in one PNG (label: the JSON's "model")."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_clicks", description=main.__doc__)
    p.add_argument("results", nargs="+", help="JSON files written by esam-eval --protocol clicks")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    curves = {}
    for f in args.results:
        try:
            r = json.loads(Path(f).read_text())
            ys = r["miou_at_clicks"]
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"eval_clicks: {f}: not a click-protocol results JSON ({type(e).__name__}: {e})") from None
        label = str(r.get("model") or Path(f).stem)
        if r.get("rules", {}).get("feed_logits"):
            label += " (feed logits)"
        curves[label] = ys
    plot_clicks(curves, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
