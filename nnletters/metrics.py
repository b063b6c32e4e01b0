"""Metrics files of a run and the one-line epoch summary.

``metrics.jsonl`` and ``metrics.csv`` hold one row per epoch: epoch, lr, train_loss,
train_accuracy, val_loss, val_accuracy, epoch_seconds (wall time of that epoch's training
steps); metrics.jsonl also holds what callbacks add (the per-layer diagnostics,
``nnletters.diagnostics``). Both are rewritten whole and atomically each epoch (they are
small), so a crash never leaves half a row, and a resumed run continues them without
duplicates.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from nnletters.fileio import write_text

COLUMNS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
           "epoch_seconds")


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    write_text(run_dir / "metrics.csv", buf.getvalue())


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (an empty list when there is none)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def format_epoch(row: dict[str, Any], epochs: int, is_best: bool) -> str:
    """One line that fits 80 columns, e.g.
    'epoch  3/20  lr 3.00e-04  train 0.3121 91.20%  val 0.2803 92.00%  4.1s  *'
    (loss then accuracy; * marks a new best epoch)."""
    text = (f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}  lr {row['lr']:.2e}  "
            f"train {row['train_loss']:.4f} {100 * row['train_accuracy']:.2f}%")
    if row.get("val_loss") is not None:
        text += f"  val {row['val_loss']:.4f} {100 * row['val_accuracy']:.2f}%"
    text += f"  {row['epoch_seconds']:.1f}s"
    return text + ("  *" if is_best else "")
