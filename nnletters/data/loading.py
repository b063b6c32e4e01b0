"""From a config or a path to arrays: ``load_dataset`` reads one source (decoding in parallel,
through the cache), ``load_splits`` gives the train / validation / test sets a config names."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from nnletters.config import DataConfig
from nnletters.data import cache as cache_store
from nnletters.data.dataset import Dataset, Splits
from nnletters.data.fingerprint import dataset_digest
from nnletters.data.images import decode_chunk, map_chunks, to_unit_float
from nnletters.data.sources import Source, arrange, class_names, open_source, progress_bar
from nnletters.data.split import dedup_against, stratified_split
from nnletters.errors import DataError


def load_dataset(path: str | Path, image_size: int, *, workers: int = 0, cache: bool = True,
                 cache_dir: str | Path | None = None, progress: bool = False) -> Dataset:
    """Read every image of a folder, archive or list file(s), resized to image_size squared.

    Unreadable files are skipped and listed in ``skipped``. DataError when the path cannot be
    used, nothing is readable, or a class has no readable image. With ``cache`` the decoded
    arrays are kept in ``cache_dir`` and reused while the source is unchanged.
    """
    source = open_source(path)
    if not cache:
        return _decode(source, image_size, workers, progress)
    file, key = cache_store.cache_file(cache_dir, str(source.path), image_size,
                                       {"kind": source.kind, "files": source.fingerprint()})
    hit = cache_store.fetch(file, key)
    if hit is not None:
        return hit[0]
    dataset = _decode(source, image_size, workers, progress)
    cache_store.store(file, key, dataset)
    return dataset


def load_splits(cfg: DataConfig, seed: int, *, progress: bool = False,
                fonts: list[Path] | None = None) -> Splits:
    """The data a config names, split into train/val/test.

    The source's own split is used when it has one (train.txt/validate.txt/test.txt);
    otherwise ``stratified_split`` with the config's fractions and ``seed``. With
    ``cfg.dedup`` training images pixel-identical to a val/test image are dropped.
    ``fonts``: the font files synthetic letters are drawn from (default: this machine's).
    """
    if cfg.source == "synthetic":
        from nnletters.data.synthetic import load_synthetic

        dataset = load_synthetic(cfg.synthetic, cfg.image_size, seed, cache=cfg.cache,
                                 cache_dir=cfg.cache_dir, progress=progress, fonts=fonts)
    else:
        if not cfg.path:
            raise DataError("data.path: expected a folder, archive or list file, got nothing")
        dataset = load_dataset(cfg.path, cfg.image_size, workers=cfg.workers, cache=cfg.cache,
                               cache_dir=cfg.cache_dir, progress=progress)
    if dataset.split is not None:
        index = tuple(np.flatnonzero(dataset.split == code) for code in range(3))
    else:
        index = stratified_split(dataset.y, cfg.val_fraction, cfg.test_fraction, seed)
    train, val, test = (dataset.subset(i) for i in index)
    n_deduped = 0
    if cfg.dedup:
        train, n_deduped = dedup_against(train, [val, test])
    return Splits(train=train, val=val, test=test, classes=list(dataset.classes),
                  skipped=list(dataset.skipped), fonts=list(dataset.fonts),
                  font_files=list(dataset.font_files), source_digest=dataset_digest(dataset),
                  n_deduped=n_deduped)


def _decode(source: Source, image_size: int, workers: int, progress: bool) -> Dataset:
    """Decode every image of ``source`` (in parallel when large) and arrange the arrays."""
    names: list[str] = []
    reasons: list[str | None] = []
    blocks = [np.zeros((0, image_size * image_size), np.uint8)]
    with progress_bar(source, "decoding", progress) as bar:
        fn = partial(decode_chunk, image_size=image_size)
        for chunk, (pixels, why) in map_chunks(fn, source.items(), workers=workers):
            names.extend(name for name, _ in chunk)
            blocks.append(pixels)
            reasons.extend(why)
            bar.update(len(chunk))
    labels = source.labels
    if source.kind in ("folder", "archive"):
        names, labels = class_names(names)
    layout = arrange(source, names, labels, reasons)
    pixels = np.concatenate(blocks)[layout.order]
    split = None
    if source.kind == "splits":
        split = np.asarray(source.splits, dtype=np.int8)[layout.order]
    return Dataset(X=to_unit_float(pixels), y=layout.y, classes=layout.classes,
                   paths=[names[i] for i in layout.order], skipped=layout.skipped, split=split)
