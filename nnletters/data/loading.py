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
from nnletters.data.preparation import (
    PREPARATION_VERSION,
    Look,
    as_judged,
    judge_set,
    prepare_chunk,
)
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
    dataset = _load_pixels(path, image_size, workers, cache, cache_dir, progress)
    dataset.X = to_unit_float(dataset.X)
    return dataset


def load_prepared(path: str | Path, look: Look, *, workers: int = 0, cache: bool = True,
                  progress: bool = False) -> tuple[Dataset, dict[str, int]]:
    """Every image of a folder, archive or list file (a list file: exactly its lines), each
    prepared for a model whose training images look like ``look`` (``prepare_pixels``:
    untouched when already in that format, else inverted, cropped and framed), the set's
    polarity judged over all of them as ``predict`` judges the files it is given together:
    what ``eval --data`` and ``report --data`` judge a model on.

    -> (dataset, how many images were inverted, framed, or held no glyph, by those names)."""
    source = open_source(path, split_lists=False)
    if cache:  # a name of its own, so that it never evicts the plain entry training uses
        file, key = cache_store.cache_file(
            None, f"{source.path}#prepared", look.image_size,
            {"kind": source.kind, "files": source.fingerprint(),
             "look": [look.light_on_dark, look.glyph_fill], "version": PREPARATION_VERSION})
        hit = cache_store.fetch(file, key)
        if hit is not None:
            return hit[0], dict(hit[1].get("prepared", {}))
    dataset, extra = _decode(source, look.image_size, workers, progress,
                             partial(prepare_chunk, look=look))
    view = judge_set((found for _, found in extra), look)
    # Judged as a set, some image would come out otherwise than alone: prepare them all so.
    if not all(as_judged(done, found, view, look) for done, found in extra):
        dataset, extra = _decode(source, look.image_size, workers, progress,
                                 partial(prepare_chunk, look=look, view=view))
    counts: dict[str, int] = {}
    for done, _ in extra:
        for note in done:
            counts[note] = counts.get(note, 0) + 1
    if cache:
        cache_store.store(file, key, dataset, extra={"prepared": counts})
    dataset.X = to_unit_float(dataset.X)
    return dataset, counts


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
        # uint8 until the split: each split converts only its own rows (see Dataset).
        dataset = _load_pixels(cfg.path, cfg.image_size, cfg.workers, cfg.cache,
                               cfg.cache_dir, progress)
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


def _load_pixels(path: str | Path, image_size: int, workers: int, cache: bool,
                 cache_dir: str | Path | None, progress: bool) -> Dataset:
    """``load_dataset``, but X stays uint8 (N, S*S): from the cache, or decoded (and then
    cached) when the cache has no current entry."""
    source = open_source(path)
    if not cache:
        return _decode(source, image_size, workers, progress)[0]
    file, key = cache_store.cache_file(cache_dir, str(source.path), image_size,
                                       {"kind": source.kind, "files": source.fingerprint()})
    hit = cache_store.fetch(file, key, as_pixels=True)
    if hit is not None:
        return hit[0]
    dataset = _decode(source, image_size, workers, progress)[0]
    cache_store.store(file, key, dataset)
    return dataset


def _decode(source: Source, image_size: int, workers: int, progress: bool,
            chunk_fn=None) -> tuple[Dataset, list]:
    """Decode every image of ``source`` (in parallel when large) and arrange the arrays;
    X: (N, S*S) uint8 pixels.

    ``chunk_fn``: ``decode_chunk`` by default, or ``prepare_chunk``, whose third output (one
    value per item) is returned in the dataset's order beside it (else [])."""
    names: list[str] = []
    reasons: list[str | None] = []
    extra: list = []
    blocks = [np.zeros((0, image_size * image_size), np.uint8)]
    with progress_bar(source, "decoding", progress) as bar:
        fn = chunk_fn or partial(decode_chunk, image_size=image_size)
        for chunk, (pixels, why, *more) in map_chunks(fn, source.items(), workers=workers):
            names.extend(name for name, _ in chunk)
            blocks.append(pixels)
            reasons.extend(why)
            extra.extend(more[0] if more else ())
            bar.update(len(chunk))
    labels = source.labels
    if source.kind in ("folder", "archive"):
        names, labels = class_names(names)
    layout = arrange(source, names, labels, reasons)
    pixels = np.concatenate(blocks)[layout.order]
    split = None
    if source.kind == "splits":
        split = np.asarray(source.splits, dtype=np.int8)[layout.order]
    dataset = Dataset(X=pixels, y=layout.y, classes=layout.classes,
                      paths=[names[i] for i in layout.order], skipped=layout.skipped,
                      split=split)
    return dataset, [extra[i] for i in layout.order] if extra else []
