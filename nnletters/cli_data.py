"""``nnletters data ...``: look at a dataset before training on it, and manage the cache."""

from __future__ import annotations

import json
from pathlib import Path

import click

from nnletters.errors import NNLettersError


@click.group("data")
def data_group() -> None:
    """Inspect datasets and manage the decoded-data cache."""


@data_group.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--split", "split_config", type=click.Path(path_type=Path), default=None,
              help="Config YAML whose seed and data fractions give the split to check for "
                   "train/test leakage.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Decoding processes; 0 picks one per core.")
def inspect_command(path: Path, as_json: bool, split_config: Path | None, workers: int) -> None:
    """Report what the dataset at PATH holds: images per class, sizes and modes, unreadable
    files, blank images, identical images and conflicting labels."""
    from nnletters.data.inspect import format_report, inspect_dataset

    try:
        report = inspect_dataset(path, split_config=split_config, workers=workers,
                                 progress=True)
    except NNLettersError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report, ensure_ascii=False) if as_json else format_report(report))


@data_group.command("cache")
@click.option("--clear", is_flag=True, help="Remove every cached dataset.")
@click.option("--dir", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="Cache folder (default: $NNLETTERS_CACHE_DIR or ~/.cache/nnletters).")
def cache_command(clear: bool, cache_dir: Path | None) -> None:
    """Show the cache folder and its entries, or remove them with --clear."""
    from nnletters.data import cache

    folder = cache_dir.expanduser() if cache_dir else cache.default_cache_dir()
    try:
        found = cache.clear(folder) if clear else cache.entries(folder)
    except OSError as exc:
        raise click.ClickException(f"{folder}: {exc.strerror or exc}") from None
    total = sum(e.size for e in found)
    if clear:
        click.echo(f"{folder}: removed {len(found)} entries ({_size(total)})")
        return
    click.echo(f"{folder}: {len(found)} entries, {_size(total)}")
    for entry in found:
        click.echo(f"  {entry.path.name}  {_size(entry.size)}")


def _size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")
