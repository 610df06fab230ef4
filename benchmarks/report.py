"""Reports: the `esam-bench` tables (ours / official ratios, "HQ over base", markdown, the latency plot)
and the options and report writer shared by the training-speed scripts (`sami_speed`, `finetune_speed`)."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["PHASES", "ratios", "hq_overhead", "markdown", "plot", "add_common_args", "write_report"]

PHASES = ("encoder", "decoder_1", "decoder_n", "e2e")


# ----------------------------------------------------------------------------------------------
# esam-bench
# ----------------------------------------------------------------------------------------------


def _g(v: float | None) -> str:
    """1 decimal for large numbers, 3 significant digits for small ones (tiny test configs); "-" for none."""
    if v is None:
        return "-"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def _ms(v: float) -> str:
    """A signed latency difference: 1 decimal, 2 below 10 ms (GPU decoders)."""
    return f"{v:+.1f}" if abs(v) >= 10 else f"{v:+.2f}"


def _pct(added: float | None, base: float | None) -> str:
    return f"{100 * added / base:+.1f}%" if added is not None and base else "-"


def _fmt_lat(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['median']:.1f} ({d['min']:.1f}–{d['max']:.1f})"


def ratios(results: list[dict]) -> list[dict]:
    out = []
    by = {(r["model"], r["impl"]): r for r in results if "latency_ms" in r}
    for (model, impl), r in by.items():
        ref = by.get((model, "official"))
        if impl != "ours" or ref is None:
            continue
        out.append({
            "model": model,
            **{p: r["latency_ms"][p]["median"] / ref["latency_ms"][p]["median"] for p in PHASES},
        })
    return out


def hq_overhead(results: list[dict]) -> list[dict]:
    """Per backbone with both rows timed: what the HQ variant adds over its base (ours vs ours).
    Latency: differences of medians, in ms and relative to the base."""
    out = []
    by = {(r["model"], r["impl"]): r for r in results if "latency_ms" in r}
    for r in results:
        if not r.get("hq") or "latency_ms" not in r:
            continue
        base = by.get((r["base_model"], "ours"))
        if base is None:
            continue
        row: dict[str, Any] = {
            "model": r["base_model"], "params_base": base["params"], "params_added": r["params"] - base["params"],
        }
        for key in ("gmacs_encoder", "gmacs_decoder_per_prompt"):
            a, b = r.get(key), base.get(key)
            row[f"{key}_added"] = None if a is None or b is None else a - b
            row[f"{key}_base"] = b
        for p in PHASES:
            b = base["latency_ms"][p]["median"]
            row[f"{p}_base_ms"] = b
            row[f"{p}_added_ms"] = r["latency_ms"][p]["median"] - b
        out.append(row)
    return out


def markdown(report: dict) -> str:
    a = report["args"]
    n = a["prompts"]
    lines = [
        f"Device `{report['machine'].get('gpu', report['machine']['cpu'])}` ({a['device']}), dtype {a['dtype']}, "
        f"batch {a['batch_size']}, input {a['image_size']} px, torch {report['machine']['torch']}, "
        f"{report['machine']['torch_threads']} threads, compile={a['compile']}, warm-up {a['warmup']}, "
        f"repeats {a['repeats']}. Latency in ms: median (min–max).",
        "",
        f"| model | impl | params (M) | encoder GMACs | decoder GMACs / prompt | encoder | decoder, 1 box "
        f"| decoder, {n} boxes | end to end | img/s | peak mem (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['impl']} | error: {r['error'][:80]} |||||||||")
            continue
        lat = r["latency_ms"]
        lines.append(
            f"| {r['model']} | {r['impl']} | {r['params'] / 1e6:.2f} | {_g(r.get('gmacs_encoder'))} | "
            f"{_g(r.get('gmacs_decoder_per_prompt'))} | {_fmt_lat(lat['encoder'])} | {_fmt_lat(lat['decoder_1'])} | "
            f"{_fmt_lat(lat['decoder_n'])} | {_fmt_lat(lat['e2e'])} | {r['throughput_img_s']:.2f} | "
            f"{r['peak_mem_mb']:.0f} |"
        )
    if report["ratios"]:
        lines += [
            "",
            "Ours / official (median latency; < 1 means ours is faster):",
            "",
            f"| model | encoder | decoder, 1 box | decoder, {n} boxes | end to end |",
            "|---|---|---|---|---|",
        ]
        for q in report["ratios"]:
            lines.append(
                f"| {q['model']} | {q['encoder']:.2f} | {q['decoder_1']:.2f} | {q['decoder_n']:.2f} | {q['e2e']:.2f} |"
            )
    hq = report.get("hq_overhead") or []
    if hq:
        lines += [
            "",
            "HQ over base (`<model>+hq` minus `<model>`, ours; latency: difference of medians, in ms and % of the "
            "base; HQ encoder = encoder + the once-per-image fusion; HQ decoder = with the HQ features, per call):",
            "",
            f"| model | params added | encoder GMACs added | decoder GMACs / prompt added | encoder | decoder, 1 box "
            f"| decoder, {n} boxes | end to end |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for q in hq:
            cells = [
                f"{q['params_added']:,} ({_pct(q['params_added'], q['params_base'])})",
                f"{_g(q['gmacs_encoder_added'])} ({_pct(q['gmacs_encoder_added'], q['gmacs_encoder_base'])})",
                f"{_g(q['gmacs_decoder_per_prompt_added'])} "
                f"({_pct(q['gmacs_decoder_per_prompt_added'], q['gmacs_decoder_per_prompt_base'])})",
            ] + [f"{_ms(q[f'{p}_added_ms'])} ms ({_pct(q[f'{p}_added_ms'], q[f'{p}_base_ms'])})" for p in PHASES]
            lines.append(f"| {q['model']} | " + " | ".join(cells) + " |")
    fv = [r for r in report["results"] if "fvcore_gmacs_encoder" in r]
    if fv:
        lines += [
            "",
            "GMACs cross-check (FlopCounterMode on meta / 2 vs fvcore with an SDPA handle; fvcore also counts norms):",
            "",
            "| model | encoder FlopCounterMode | encoder fvcore | diff | decoder FlopCounterMode | decoder fvcore | diff |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in fv:
            lines.append(
                f"| {r['model']} | {r['gmacs_encoder']:.5g} | {r['fvcore_gmacs_encoder']:.5g} | "
                f"{100 * r['fvcore_rel_diff_encoder']:+.2f}% | {r['gmacs_decoder_per_prompt']:.5g} | "
                f"{r['fvcore_gmacs_decoder_per_prompt']:.5g} | {100 * r['fvcore_rel_diff_decoder']:+.2f}% |"
            )
    notes = report.get("notes", [])
    if notes:
        lines += [""] + [f"- {s}" for s in notes]
    return "\n".join(lines) + "\n"


def font(size: int = 13):
    """PIL's default font at `size` (Pillow < 10.1 has one size only): the font of every benchmark plot."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def write_outputs(report: dict, md: str, json_path: str | None, markdown_path: str | None) -> None:
    """Write the JSON report and the markdown (headed by the report's `command`), creating folders."""
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2, default=str))
    if markdown_path:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(f"`{report['command']}`\n\n{md}")


def plot(report: dict, path: str | Path) -> None:
    """Latency (end to end, median) vs parameters, log-log, drawn with PIL."""
    from PIL import ImageDraw

    pts = [r for r in report["results"] if "latency_ms" in r]
    W, H = 900, 600
    L, R, T, B = 90, 30, 50, 70
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    fnt = font()
    a = report["args"]
    d.text((L, 15), f"End-to-end latency vs parameters ({a['device']}, {a['dtype']}, batch {a['batch_size']}, "
                    f"{a['image_size']} px)", fill="black", font=fnt)
    if not pts:
        im.save(path)
        return
    xs = [r["params"] / 1e6 for r in pts]
    ys = [r["latency_ms"]["e2e"]["median"] for r in pts]

    def bounds(v: list[float]) -> tuple[float, float]:
        lo, hi = math.log10(min(v)), math.log10(max(v))
        pad = max(0.15, (1.0 - (hi - lo)) / 2)  # at least one decade shown
        return lo - pad, hi + pad

    lo_x, hi_x = bounds(xs)
    lo_y, hi_y = bounds(ys)

    def px(v: float) -> float:
        return L + (math.log10(v) - lo_x) / (hi_x - lo_x) * (W - L - R)

    def py(v: float) -> float:
        return H - B - (math.log10(v) - lo_y) / (hi_y - lo_y) * (H - T - B)

    def ticks(lo: float, hi: float):
        for e in range(math.floor(lo), math.ceil(hi) + 1):
            for m in range(1, 10):
                v = m * 10.0**e
                if lo <= math.log10(v) <= hi:
                    yield v, m

    for v, m in ticks(lo_x, hi_x):
        x = px(v)
        d.line([(x, T), (x, H - B)], fill=(170, 170, 170) if m == 1 else (225, 225, 225))
        if m in (1, 2, 5):
            d.text((x - 8, H - B + 8), f"{v:g}", fill="black", font=fnt)
    for v, m in ticks(lo_y, hi_y):
        y = py(v)
        d.line([(L, y), (W - R, y)], fill=(170, 170, 170) if m == 1 else (225, 225, 225))
        if m in (1, 2, 5):
            d.text((L - 60, y - 7), f"{v:g}", fill="black", font=fnt)
    d.rectangle([L, T, W - R, H - B], outline="black")
    d.text(((L + W - R) // 2 - 80, H - 35), "parameters (millions, log scale)", fill="black", font=fnt)
    d.text((8, T - 18), "end-to-end latency, ms (log)", fill="black", font=fnt)
    colors = {"ours": (31, 119, 180), "official": (214, 39, 40), "hq": (44, 160, 44)}
    placed: list[tuple[float, float, float, float]] = []
    for r, x, y in sorted(zip(pts, xs, ys), key=lambda t: -t[2]):  # top to bottom
        cx, cy = px(x), py(y)
        c = colors["hq"] if r.get("hq") else colors.get(r["impl"], (0, 0, 0))
        if r["impl"] == "official":
            d.rectangle([cx - 5, cy - 5, cx + 5, cy + 5], outline=c, width=2)
        else:
            d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=c)
        label = f"{r['model']} ({r['impl']}) {y:.0f} ms"
        x0, x1 = d.textbbox((0, 0), label, font=fnt)[0::2]
        lw, lh = x1 - x0, 14
        lx, ly = cx + 8, cy - lh
        if lx + lw > W - 4:
            lx = cx - 8 - lw
        while any(lx < b[2] and b[0] < lx + lw and ly < b[3] and b[1] < ly + lh for b in placed):
            ly += lh  # below the labels already drawn
        placed.append((lx, ly, lx + lw, ly + lh))
        d.text((lx, ly), label, fill=c, font=fnt)
    lx = W - R - 190  # legend above the frame, right
    d.ellipse([lx, 10, lx + 10, 20], fill=colors["ours"])
    d.text((lx + 16, 8), "ours", fill="black", font=fnt)
    if any(r.get("hq") for r in pts):
        d.ellipse([lx - 90, 10, lx - 80, 20], fill=colors["hq"])
        d.text((lx - 74, 8), "ours + HQ", fill="black", font=fnt)
    d.rectangle([lx, 28, lx + 10, 38], outline=colors["official"], width=2)
    d.text((lx + 16, 26), "official segment_anything", fill="black", font=fnt)
    im.save(path)

# ----------------------------------------------------------------------------------------------
# The training-speed scripts
# ----------------------------------------------------------------------------------------------


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options every training-speed script shares: peak, threads, seed and the two report files."""
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="device peak in TFLOP/s for the %% of peak, e.g. 989 (H100 SXM dense bf16)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the full results here")
    p.add_argument("--markdown", default=None, help="write the markdown table here")


def write_report(module: str, argv: list[str] | None, table: list[str], notes: list[str], report: dict,
                 json_path: str | None, markdown_path: str | None) -> None:
    """Print the markdown (table + notes) and write it and the JSON report (with the command line)."""
    md = "\n".join(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(md)
    argv = sys.argv[1:] if argv is None else argv
    command = f"python -m benchmarks.{module} " + " ".join(shlex.quote(a) for a in argv)
    write_outputs({"command": command, **report, "notes": notes}, md, json_path, markdown_path)
