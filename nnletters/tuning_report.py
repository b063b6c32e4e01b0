"""report/tune.html of a sweep: one self-contained page (pictures embedded as data: URIs).

    SWEEP/report/
        history.png     each trial's value in the order trials finished, best so far as a line
        params.png      one panel per parameter: its sampled value against the trial's value
        compare.png     validation curves of the top runs (``nnletters report --compare``)
        tune.html       the leaderboard and the three pictures

Drawn with matplotlib's object API, like ``nnletters.report``.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from nnletters.fileio import write_text, write_with
from nnletters.report import DPI, _figure_png, write_compare

TOP_CURVES = 5


def write_tune_report(out: Path, rows: list[dict[str, Any]], study: Any) -> Path:
    """Write the pictures and tune.html into OUT/report/; -> tune.html's path."""
    from nnletters.tuning_results import leaderboard

    folder = out / "report"
    folder.mkdir(exist_ok=True)
    done = [r for r in rows if r["value"] is not None]
    pictures = {"history.png": history_png(done), "params.png": params_png(done)}
    for name, data in pictures.items():
        write_with(folder / name, lambda fh, d=data: fh.write(d))
    curves = top_run_dirs(out, rows)
    if len(curves) >= 2:
        pictures["compare.png"] = write_compare(curves, folder).read_bytes()
    page = folder / "tune.html"
    write_text(page, _page(study.study_name, leaderboard(rows), pictures))
    return page


def top_run_dirs(out: Path, rows: list[dict[str, Any]], k: int = TOP_CURVES) -> list[Path]:
    """Run folders of the best finished trials that are on this machine (a trial with
    seeds: its first seed's folder)."""
    found = []
    for r in rows:
        if r["state"] != "COMPLETE" or not r["folder"]:
            continue
        base = out / r["folder"]
        run = base if (base / "metrics.jsonl").exists() else next(
            (p for p in sorted(base.glob("seed*")) if (p / "metrics.jsonl").exists()), None)
        if run is not None:
            found.append(run)
        if len(found) == k:
            break
    return found


def history_png(rows: list[dict[str, Any]]) -> bytes:
    """Value per trial in the order they finished; pruned trials hollow; best so far."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ordered = sorted(rows, key=lambda r: (r["finished"] or "~", r["trial"]))
    best, best_line = -math.inf, []
    for i, r in enumerate(ordered, 1):
        pruned = r["state"] != "COMPLETE"
        ax.plot([i], [100 * r["value"]], "o", mfc="none" if pruned else "C0", mec="C0")
        ax.annotate(str(r["trial"]), (i, 100 * r["value"]), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")
        if not pruned:
            best = max(best, 100 * r["value"])
        best_line.append(best if best > -math.inf else math.nan)
    ax.step(range(1, len(ordered) + 1), best_line, where="post", color="C1",
            label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials finished (hollow: pruned, value at the stop)")
    ax.set_ylabel("best val accuracy (%)")
    ax.set_title("Value per trial, in the order they finished")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _figure_png(fig)


def params_png(rows: list[dict[str, Any]]) -> bytes:
    """One panel per parameter: its value (x) against the trial's value (y)."""
    from matplotlib.figure import Figure

    keys = list(dict.fromkeys(k for r in rows for k in r["params"])) or ["(no parameters)"]
    cols = min(3, len(keys))
    n_rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(5 * cols, 3.6 * n_rows), dpi=DPI, layout="constrained")
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        points = [(r["params"][key], 100 * r["value"], r["state"] != "COMPLETE")
                  for r in rows if key in r["params"]]
        _param_panel(ax, key, points)
        if any(r["log_params"].get(key) for r in rows):
            ax.set_xscale("log")
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    return _figure_png(fig)


def _param_panel(ax: Any, key: str, points: list[tuple[Any, float, bool]]) -> None:
    categorical = any(isinstance(x, str) for x, _, _ in points)
    labels = sorted({str(x) for x, _, _ in points}) if categorical else []
    for x, y, pruned in points:
        pos = labels.index(str(x)) if categorical else x
        ax.plot([pos], [y], "o", mfc="none" if pruned else "C0", mec="C0")
    if categorical:
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_title(key)
    ax.set_ylabel("val accuracy (%)")
    ax.grid(True, alpha=0.3)


def _page(name: str, board: str, pictures: dict[str, bytes]) -> str:
    images = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{file}" src="data:image/png;base64,'
        f'{base64.b64encode(pictures[file]).decode()}">\n'
        for file, title in (("history.png", "Value per trial"),
                            ("params.png", "Each parameter against the value"),
                            ("compare.png", "Validation curves of the top runs"))
        if file in pictures)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>nnletters tune: "
            f"{html.escape(name)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            f"img{{max-width:100%}}</style></head><body><h1>Study {html.escape(name)}</h1>"
            f"<pre>{html.escape(board)}</pre>\n{images}</body></html>\n")
