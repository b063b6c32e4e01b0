"""The ``nnletters`` command line: thin Click commands that parse, call one function, print.

nnletters' own errors become ``Error: <one line>`` and exit code 1 (``--debug`` shows the
traceback instead); bad usage is Click's exit code 2. Heavy imports happen inside commands so
that ``nnletters predict`` starts fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from nnletters.errors import NNLettersError


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn nnletters' errors into one ``Error:`` line (exit 1) unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NNLettersError as exc:
            if _debug():
                raise
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # the system refused (disk full, permissions): name the file
            if _debug():
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None

    return wrapper


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and (ctx.find_root().obj or {}).get("debug"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.version_option(package_name="nnletters")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Train NumPy multilayer perceptrons that read letters in small images."""
    ctx.obj = {"debug": debug}
    if not debug:
        ctx.with_resource(_warnings_on_one_line())


@contextlib.contextmanager
def _warnings_on_one_line() -> Iterator[None]:
    """Library warnings (a dataset cache that cannot be written, a damaged EXIF block) as one
    ``Warning: ...`` line each on stderr, not Python's two lines quoting our source."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_a, **_k: click.echo(f"Warning: {message}",
                                                                     err=True)
        yield


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML experiment config.")
@click.option("--resume", "resume_dir", type=click.Path(), metavar="RUN_DIR",
              help="Continue a stopped run from its last complete epoch (its own config.yaml "
                   "is used; --set train.epochs=N extends the run).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key (value parsed as YAML); repeatable.")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (exactly this path).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no per-epoch lines.")
@click.option("--report", "make_report", is_flag=True,
              help="Write the pictures and report.html into RUN/report/ when training ends.")
@handle_errors
def train(config_path: str | None, resume_dir: str | None, overrides: tuple[str, ...],
          out: str | None, quiet: bool, make_report: bool) -> None:
    """Train a model from a YAML config and write a run folder, or --resume a stopped run.

    Ctrl-C (or SIGTERM) stops between two steps, keeps the last complete epoch's checkpoint
    and exits 130 (143)."""
    from nnletters.config import load_config
    from nnletters.experiment import new_run_dir, resume_run, train_run

    if config_path is None and resume_dir is None:
        raise click.UsageError("Missing option '--config' (or '--resume RUN_DIR').")
    if resume_dir is not None and out is not None:
        raise click.UsageError("--resume continues the run in its own folder; drop --out.")
    for item in overrides:
        if "=" not in item or not item.partition("=")[0].strip():
            raise click.UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=0.01")
    progress = not quiet and sys.stderr.isatty()
    log = (lambda _msg: None) if quiet else (lambda msg: click.echo(msg))
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        start = functools.partial(resume_run, run_dir, overrides, config_path)
    else:
        cfg = load_config(config_path, overrides)
        run_dir = new_run_dir(cfg, out)
        start = functools.partial(train_run, cfg, run_dir)
    try:
        summary = start(progress=progress, log=log)
    except KeyboardInterrupt as exc:
        click.echo(_interrupted_line(exc, run_dir), err=True)
        sys.exit(getattr(exc, "exit_code", 130))
    if quiet and summary.get("test_accuracy") is not None:
        click.echo(f"test accuracy {100 * summary['test_accuracy']:.2f}%  run folder {run_dir}")
    if make_report:
        from nnletters.report import write_report

        click.echo(f"report {write_report(run_dir, progress=progress)['report.html']}")


def _interrupted_line(exc: KeyboardInterrupt, run_dir: Path) -> str:
    """One line for stderr: where training stopped and how to go on."""
    from nnletters.training import Interrupted

    if isinstance(exc, Interrupted):
        return exc.message()
    if (run_dir / "last.npz").exists():
        return f"Interrupted; resume with: nnletters train --resume {shlex.quote(str(run_dir))}"
    return "Interrupted before any epoch was saved; nothing to resume"


@main.command("eval")
@click.argument("target", required=False)
@click.option("--data", "data_path", type=click.Path(),
              help="Evaluate on all of this dataset instead of the run's test split.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def eval_command(target: str | None, data_path: str | None, as_json: bool) -> None:
    """Accuracy, loss, per-class scores and confusion matrix of a run or checkpoint
    (default: the most recent run under runs/)."""
    from nnletters.evaluation import evaluate_checkpoint, format_report

    result = evaluate_checkpoint(target, data_path, progress=not as_json and sys.stderr.isatty())
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"checkpoint {result['checkpoint']}")
        click.echo(format_report(result))


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--checkpoint", "target", help="Run folder or .npz (default: the latest run).")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many of the most likely letters to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of results.")
@handle_errors
def predict(images: tuple[str, ...], target: str | None, top_k: int, as_json: bool) -> None:
    """The letter in each IMAGE (files or folders of images), with probabilities."""
    from nnletters.prediction import predict_images

    results, errors = predict_images(list(images), target, top_k)
    if as_json:
        click.echo(json.dumps(results))
    else:
        for r in results:
            others = "  ".join(f"{label} {100 * p:.1f}%" for label, p in r["top_k"][1:])
            click.echo(f"{r['path']}: {r['label']} ({100 * r['probability']:.1f}%)"
                       + (f"   then {others}" if others else ""))
    for _path, message in errors:
        click.echo(f"Error: {message}", err=True)
    if errors:
        sys.exit(1)


def _register_commands() -> None:
    """Commands that live in their own modules (each imports only click at module level)."""
    from nnletters.cli_data import data_group
    from nnletters.cli_gradcheck import gradcheck
    from nnletters.cli_report import report_command
    from nnletters.cli_synth import synth_command

    data_group.add_command(synth_command)
    main.add_command(data_group)
    main.add_command(gradcheck)
    main.add_command(report_command)


_register_commands()
