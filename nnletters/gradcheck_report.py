"""``nnletters gradcheck``: backprop against central differences for a configured model.

The check runs on a float64 twin of the model the config describes (same depth, activation,
loss, dropout and initial-weight draw), fed a few real training samples from the configured
data, so it checks exactly the maths ``nnletters train`` uses, without float32 round-off
hiding a small mistake. Dropout gets fixed masks, so the loss is a deterministic function of
the parameters; the L2 term is included when the optimiser puts it into the gradient. The
comparison itself is :func:`nnletters.nn.gradcheck.check_gradients`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.config import Config
from nnletters.errors import DataError
from nnletters.nn.gradcheck import (
    DEFAULT_THRESHOLD,
    REL_ERROR_FLOOR,
    STEP,
    check_gradients,
    fix_dropout_masks,
)
from nnletters.nn.model import MLP


@dataclass
class GradcheckReport:
    """What was checked and how, plus one result dict per parameter tensor."""

    model: str                       # e.g. "289-20-26 sigmoid"
    loss: str                        # the config's loss name
    dropout: float                   # dropout rate (its masks are fixed)
    samples: int                     # training samples the loss is averaged over
    weight_decay: float              # L2 coefficient inside the checked loss
    decay_note: str                  # why weight_decay is what it is
    threshold: float                 # max relative error a tensor may show
    max_entries: int                 # entries checked per tensor, at most
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kinks_skipped(self) -> int:
        """Checked entries left out because a step of h crossed a ReLU kink."""
        return sum(r["kinks_skipped"] for r in self.results)

    @property
    def failed(self) -> list[str]:
        """Names of the tensors whose max relative error exceeds the threshold."""
        return [r["name"] for r in self.results if not r["passed"]]


def pick_samples(X: NDArray[np.float32], y: NDArray[np.int64], n: int,
                 rng: np.random.Generator) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """``n`` distinct rows chosen by ``rng`` (all rows when fewer), as float64 (n, D) and
    int64 (n,). Raises DataError when there are none."""
    if len(y) == 0:
        raise DataError("gradcheck: the training split is empty; nothing to check on")
    rows = np.sort(rng.choice(len(y), size=min(n, len(y)), replace=False))
    return X[rows].astype(np.float64), y[rows]


def checked_weight_decay(cfg: Config) -> tuple[float, str]:
    """The L2 coefficient that belongs in the checked loss, and a note saying why."""
    wd = cfg.optim.weight_decay
    if not wd:
        return 0.0, "(no L2 term: optim.weight_decay is 0)"
    if cfg.optim.name == "adamw":
        # AdamW shrinks the weights outside the gradient, so backprop never sees the decay.
        return 0.0, (f"(no L2 term: adamw applies weight_decay {wd:g} to the weights "
                     f"directly, not through the gradient)")
    return wd, f"+ L2 term 0.5 * {wd:g} * ||W||^2 (weights only)"


def check_config_gradients(cfg: Config, samples: int = 8, max_entries: int = 64,
                   threshold: float = DEFAULT_THRESHOLD, progress: bool = False
                   ) -> GradcheckReport:
    """Load the configured data, build the float64 twin, and check every parameter tensor.

    One Generator seeded with ``cfg.seed`` draws, in order, the samples, the initial weights,
    the dropout masks and the checked entries, so a report is reproducible."""
    from nnletters.data import load_splits

    splits = load_splits(cfg.data, cfg.seed, progress=progress)
    rng = np.random.default_rng(cfg.seed)
    X, y = pick_samples(splits.train.X, splits.train.y, samples, rng)
    model = MLP.from_config(cfg.model, X.shape[1], len(splits.classes), rng, dtype=np.float64)
    fix_dropout_masks(model, len(y), rng)
    weight_decay, note = checked_weight_decay(cfg)
    results = check_gradients(model, X, y, weight_decay=weight_decay, h=STEP,
                              max_entries=max_entries, rng=rng, threshold=threshold)
    described = model.describe() if cfg.model.hidden else \
        f"{model.sizes[0]}-{model.sizes[1]} (no hidden layer)"
    dropout = cfg.model.dropout if model.dropout_layers() else 0.0
    return GradcheckReport(model=described, loss=cfg.model.loss, dropout=dropout,
                           samples=len(y),
                           weight_decay=weight_decay, decay_note=note, threshold=threshold,
                           max_entries=max_entries,
                           results=results)


def format_gradcheck(report: GradcheckReport) -> str:
    """The human-readable table: one line per tensor, the worst entry, then the verdict."""
    lines = [
        f"model {report.model}, float64 twin; {report.samples} training samples; "
        f"central differences with h = {STEP:g}",
        f"loss checked: mean {report.loss} loss {report.decay_note}"
        + (f"; dropout {report.dropout:g} with fixed masks" if report.dropout else ""),
        f"relative error |backprop - numeric| / max(|backprop| + |numeric|, "
        f"{REL_ERROR_FLOOR:g}), "
        f"up to {report.max_entries} seeded random entries per tensor; pass if <= "
        f"{report.threshold:g}",
        "",
        *_table(report),
    ]
    worst = max(report.results, key=lambda r: r["max_rel_error"])
    if worst["worst"] is not None:
        w = worst["worst"]
        lines.append(f"\nworst entry {worst['name']}[{', '.join(map(str, w['index']))}]: "
                     f"backprop {w['analytic']:.9e}, numeric {w['numeric']:.9e}")
    if report.kinks_skipped:
        n = report.kinks_skipped
        lines.append(f"{n} {'entry' if n == 1 else 'entries'} at a ReLU kink skipped: a step "
                     f"of h = {STEP:g} moves a pre-activation across 0 there, where the slope "
                     f"jumps, so the difference quotient tests nothing")
    if not report.failed:
        lines.append(f"{'' if report.kinks_skipped or worst['worst'] else chr(10)}"
                     f"all {len(report.results)} tensors pass (worst "
                     f"{worst['max_rel_error']:.2e} <= {report.threshold:g})")
    return "\n".join(lines)


def _table(report: GradcheckReport) -> list[str]:
    rows = [("tensor", "shape", "checked", "at kink", "max rel error", "result")]
    for r in report.results:
        rows.append((r["name"], "x".join(map(str, r["shape"])),
                     f"{r['checked']} of {int(np.prod(r['shape']))}", str(r["kinks_skipped"]),
                     f"{r['max_rel_error']:.2e}", "pass" if r["passed"] else "FAIL"))
    widths = [max(len(row[k]) for row in rows) for k in range(5)]
    return [f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {checked:>{widths[2]}}  "
            f"{kink:>{widths[3]}}  {error:>{widths[4]}}  {result}"
            for name, shape, checked, kink, error, result in rows]


def gradcheck_rows(report: GradcheckReport) -> list[dict[str, Any]]:
    """One JSON-ready object per tensor."""
    return [{"tensor": r["name"], "shape": r["shape"], "size": int(np.prod(r["shape"])),
             "checked": r["checked"], "kinks_skipped": r["kinks_skipped"],
             "max_rel_error": r["max_rel_error"], "worst": r["worst"],
             "threshold": report.threshold, "passed": r["passed"]} for r in report.results]
