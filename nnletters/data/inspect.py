"""What a dataset holds, before training on it: ``nnletters data inspect PATH``.

One pass over the source (an archive is read once, front to back) decodes every image at its
own size and reports: images per class, the sizes and modes found before any resizing,
unreadable files and why, blank (constant) images, groups of pixel-identical images and those
whose labels disagree, and, given a config, the identical images shared between the training
split and the validation or test split that config would make (leakage).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from nnletters.config import from_dict, read_yaml_mapping
from nnletters.data.images import Item, Unreadable, gray_and_info, item_bytes, map_chunks
from nnletters.data.sources import arrange, class_names, open_source, progress_bar
from nnletters.data.split import stratified_split

SPLIT_NAMES = ("train", "val", "test")

# Per image: (reason or None, width, height, mode, pixel digest, constant value or -1)
Facts = tuple[str | None, int, int, str, bytes, int]


def inspect_chunk(items: list[Item]) -> list[Facts]:
    """Decode a chunk of items at their own size and keep only what the report needs (the
    pixels themselves stay in the worker; a 16-byte digest identifies them)."""
    facts: list[Facts] = []
    for item in items:
        try:
            gray, info = gray_and_info(item_bytes(item))
        except Unreadable as exc:
            facts.append((str(exc), 0, 0, "", b"", -1))
            continue
        digest = hashlib.blake2b(np.asarray(gray.shape, np.int64).tobytes(), digest_size=16)
        digest.update(np.ascontiguousarray(gray).tobytes())
        low, high = int(gray.min()), int(gray.max())
        facts.append((None, info.width, info.height, info.mode, digest.digest(),
                      low if low == high else -1))
    return facts


def inspect_dataset(path: str | Path, *, split_config: str | Path | None = None,
                    workers: int = 0, progress: bool = False) -> dict[str, Any]:
    """Report on the dataset at ``path`` as a JSON-ready dict (see ``format_report``).

    ``split_config``: a config YAML whose seed and data fractions give the split to check
    for leakage (its data.path is not used: the split is made over ``path``). A source with
    train.txt / validate.txt / test.txt is checked against its own split in any case.
    """
    split_cfg = _split_settings(split_config) if split_config is not None else None
    start = time.perf_counter()
    source = open_source(path)
    names: list[str] = []
    facts: list[Facts] = []
    with progress_bar(source, "inspecting", progress) as bar:
        for chunk, result in map_chunks(inspect_chunk, source.items(), workers=workers):
            names.extend(name for name, _ in chunk)
            facts.extend(result)
            bar.update(len(chunk))
    labels = source.labels
    if source.kind in ("folder", "archive"):
        names, labels = class_names(names)
    reasons = [f[0] for f in facts]
    layout = arrange(source, names, labels, reasons)
    order = layout.order.tolist()
    per_class = _per_class(layout.classes, labels, reasons, facts)
    report: dict[str, Any] = {
        "path": str(source.path),
        "kind": source.kind,
        "files": len(names) + len(source.refused),
        "readable": len(order),
        "outside_class_folders": layout.outside,
        "classes": per_class,
        "sizes": _counts(f"{facts[i][1]}x{facts[i][2]}" for i in order),
        "modes": _counts(facts[i][3] for i in order),
        "unreadable": [{"name": n, "reason": r} for n, r in layout.skipped],
        "blank": _blanks(order, labels, names, facts),
        "duplicates": _duplicates(order, labels, names, facts),
    }
    if split_cfg is None and source.kind == "splits":
        split_cfg = {"config": None, "dedup": False}  # the lists are the split
    if split_cfg is not None:
        report["split"] = _leakage(source.kind, source.splits, layout, facts, names,
                                   split_cfg)
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


# --------------------------------------------------------------------------- sections


def _per_class(classes: list[str], labels: list[str | None], reasons: list[str | None],
               facts: list[Facts]) -> dict[str, dict[str, int]]:
    table = {name: {"files": 0, "readable": 0, "unreadable": 0, "blank": 0} for name in classes}
    for label, reason, fact in zip(labels, reasons, facts, strict=True):
        if label is None:
            continue
        row = table[label]
        row["files"] += 1
        row["unreadable" if reason else "readable"] += 1
        row["blank"] += int(reason is None and fact[5] >= 0)
    return table


def _blanks(order: list[int], labels: list, names: list[str],
            facts: list[Facts]) -> dict[str, Any]:
    """Images of a single value: nothing to learn from, and often a rendering failure."""
    blank = [i for i in order if facts[i][5] >= 0]
    return {"total": len(blank),
            "per_class": _counts(labels[i] for i in blank),
            "values": {str(k): v for k, v in _counts(facts[i][5] for i in blank).items()},
            "names": [names[i] for i in blank]}


def _groups(order: list[int], facts: list[Facts]) -> list[list[int]]:
    """Items with identical pixels (same digest), groups of two or more, largest first."""
    by_digest: dict[bytes, list[int]] = defaultdict(list)
    for i in order:
        by_digest[facts[i][4]].append(i)
    groups = [g for g in by_digest.values() if len(g) > 1]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def _duplicates(order: list[int], labels: list, names: list[str],
                facts: list[Facts]) -> dict[str, Any]:
    groups = _groups(order, facts)
    listed = [{"labels": sorted({labels[i] for i in g}), "names": [names[i] for i in g]}
              for g in groups]
    in_groups = sum(len(g) for g in groups)
    return {"groups": len(groups), "images": in_groups,
            "distinct": len(order) - in_groups + len(groups),
            "conflicting": [g for g in listed if len(g["labels"]) > 1],
            "all": listed}


def _split_settings(config_path: str | Path) -> dict[str, Any]:
    """Seed and data fractions of a config; its data.path need not be set."""
    config_path = Path(config_path)
    raw = read_yaml_mapping(config_path)
    data = raw.get("data")
    if isinstance(data, dict) and not data.get("path") and data.get("source") != "synthetic":
        raw = {**raw, "data": {**data, "path": "(inspected path)"}}
    elif data is None:
        raw = {**raw, "data": {"path": "(inspected path)"}}
    cfg = from_dict(raw, str(config_path))
    return {"config": str(config_path), "seed": cfg.seed,
            "val_fraction": cfg.data.val_fraction, "test_fraction": cfg.data.test_fraction,
            "dedup": cfg.data.dedup}


def _leakage(kind: str, item_splits: list[int], layout: Any, facts: list[Facts],
             names: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """Identical images across splits: a test image seen in training inflates the score."""
    order = layout.order
    if kind == "splits":
        codes = np.asarray(item_splits, dtype=np.int8)[order]
        settings = {**settings, "from": "train.txt / validate.txt / test.txt"}
    else:
        codes = np.zeros(len(order), dtype=np.int8)
        _, val, test = stratified_split(layout.y, settings["val_fraction"],
                                        settings["test_fraction"], settings["seed"])
        codes[val], codes[test] = 1, 2
    split_of = dict(zip(order.tolist(), codes.tolist(), strict=True))
    report: dict[str, Any] = {**settings,
                              "sizes": {SPLIT_NAMES[k]: int((codes == k).sum()) for k in range(3)}}
    groups = _groups(order.tolist(), facts)
    for other, key in ((2, "train_test"), (1, "train_val")):
        shared = [g for g in groups if {0, other} <= {split_of[i] for i in g}]
        report[key] = {
            "groups": len(shared),
            f"{SPLIT_NAMES[other]}_images": sum(split_of[i] == other for g in shared for i in g),
            "train_images": sum(split_of[i] == 0 for g in shared for i in g),
            "examples": [[names[i] for i in g] for g in shared[:5]],
        }
    # what data.dedup would drop: training images identical to any val/test image
    held_out = {facts[i][4] for i in order.tolist() if split_of[i] != 0}
    report["dedup_would_drop"] = sum(split_of[i] == 0 and facts[i][4] in held_out
                                     for i in order.tolist())
    return report


def _counts(values: Any) -> dict[str, int]:
    """Counter as a dict, most common first (ties by key)."""
    counted = Counter(values)
    return {str(k): v for k, v in sorted(counted.items(), key=lambda kv: (-kv[1], str(kv[0])))}


# --------------------------------------------------------------------------- text report


def format_inspection(report: dict[str, Any], *, limit: int = 10) -> str:
    """The report as readable text; long lists are cut to ``limit`` lines."""
    lines = [f"{report['path']} ({report['kind']}): {report['files']:,} image files, "
             f"{report['readable']:,} readable, {len(report['classes'])} classes "
             f"({report['seconds']} s)"]
    if report["outside_class_folders"]:
        lines.append(f"  {report['outside_class_folders']:,} image files outside any class "
                     f"folder were ignored")
    lines += ["", "Images per class:"]
    width = max(len(name) for name in report["classes"])
    for name, row in report["classes"].items():
        notes = [f"{row[k]:,} {k}" for k in ("unreadable", "blank") if row[k]]
        lines.append(f"  {name:<{width}}  {row['readable']:>7,}"
                     + (f"  ({', '.join(notes)})" if notes else ""))
    lines += ["", "Sizes before resizing: " + _join_counts(report["sizes"], limit),
              "Modes: " + _join_counts(report["modes"], limit)]
    lines += _section_unreadable(report["unreadable"], limit)
    lines += _section_blank(report["blank"], limit)
    lines += _section_duplicates(report["duplicates"], limit)
    if "split" in report:
        lines += _section_split(report["split"])
    return "\n".join(lines)


def _join_counts(counts: dict[str, int], limit: int) -> str:
    items = [f"{k}: {v:,}" for k, v in list(counts.items())[:limit]]
    more = len(counts) - limit
    return ", ".join(items) + (f", ... ({more} more)" if more > 0 else "") if items else "none"


def _cut(rows: list[str], limit: int) -> list[str]:
    return rows[:limit] + ([f"    ... and {len(rows) - limit:,} more"] if len(rows) > limit else [])


def _section_unreadable(unreadable: list[dict], limit: int) -> list[str]:
    lines = ["", f"Unreadable files: {len(unreadable):,}"]
    return lines + _cut([f"  {u['name']}: {u['reason']}" for u in unreadable], limit)


def _section_blank(blank: dict[str, Any], limit: int) -> list[str]:
    lines = ["", f"Blank (single-value) images: {blank['total']:,}"]
    if blank["total"]:
        lines.append("  per class: " + _join_counts(blank["per_class"], limit))
        lines.append("  values: " + _join_counts(blank["values"], limit))
    return lines


def _section_duplicates(dup: dict[str, Any], limit: int) -> list[str]:
    lines = ["", f"Identical images: {dup['groups']:,} groups holding {dup['images']:,} images; "
                 f"{dup['distinct']:,} distinct images",
             f"  with conflicting labels: {len(dup['conflicting']):,} groups"]
    lines += _cut([f"    {' / '.join(g['labels'])}: {', '.join(g['names'])}"
                   for g in dup["conflicting"]], limit)
    if dup["all"]:
        lines.append("  largest groups:")
        lines += [f"    {len(g['names']):,} x {'/'.join(g['labels'])}: {g['names'][0]}"
                  + (", ..." if len(g["names"]) > 1 else "") for g in dup["all"][:min(5, limit)]]
    return lines


def _section_split(split: dict[str, Any]) -> list[str]:
    sizes = ", ".join(f"{k} {v:,}" for k, v in split["sizes"].items())
    where = split.get("from") or (f"seed {split['seed']}, val_fraction {split['val_fraction']}, "
                                  f"test_fraction {split['test_fraction']}")
    if split["config"]:
        where = f"{split['config']}: {where}"
    lines = ["", f"Split ({where}): {sizes}"]
    for key, other in (("train_test", "test"), ("train_val", "val")):
        leak = split[key]
        lines.append(f"  train/{other} leakage: {leak['groups']:,} groups of identical images; "
                     f"{leak[other + '_images']:,} {other} images also in train "
                     f"({leak['train_images']:,} training copies)")
    state = "on: it drops" if split["dedup"] else "off; on, it would drop"
    lines.append(f"  data.dedup is {state} {split['dedup_would_drop']:,} training images "
                 f"identical to a val/test image")
    return lines
