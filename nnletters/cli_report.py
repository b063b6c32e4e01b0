"""``nnletters report``: the pictures of a run and a one-page HTML report.

Only Click and the standard library are imported here: the CLI imports this module at
start-up, and matplotlib, NumPy and Pillow would slow down every command (``predict`` too).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """nnletters.cli.handle_errors, looked up at call time: nnletters.cli imports this module
    while it registers commands, so importing it back at module level would be circular."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from nnletters.cli import handle_errors

        return handle_errors(fn)(*args, **kwargs)

    return wrapper


@click.command("report")
@click.argument("runs", nargs=-1, metavar="[RUN_DIR]...")
@click.option("--data", "data_path", type=click.Path(),
              help="Report on all of this dataset instead of the run's test split.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the files (default: RUN_DIR/report/; with --compare, "
                   "the current folder).")
@click.option("--compare", is_flag=True,
              help="Overlay the validation curves of two or more RUN_DIRs in compare.png.")
@_handle_errors
def report_command(runs: tuple[str, ...], data_path: str | None, out: str | None,
                   compare: bool) -> None:
    """Pictures of a run (default: the latest under runs/): curves.png, confusion.png,
    mistakes.png, weights.png and a self-contained report.html."""
    if compare:
        if len(runs) < 2:
            raise click.UsageError("--compare needs two or more RUN_DIRs.")
        if data_path is not None:
            raise click.UsageError("--data cannot be used with --compare.")
        from nnletters.report import write_compare

        click.echo(f"wrote {write_compare(list(runs), out)}")
        return
    if len(runs) > 1:
        raise click.UsageError("Give one RUN_DIR (or use --compare to compare several).")
    from nnletters.report import write_report

    written = write_report(runs[0] if runs else None, data_path, out,
                           progress=sys.stderr.isatty())
    click.echo(f"wrote {written['report.html']}")
    click.echo("  and " + ", ".join(str(p.name) for name, p in written.items()
                                    if name != "report.html") + " beside it")
