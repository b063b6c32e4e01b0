"""The ``nnletters`` command line: every command, thin Click functions that parse, call one
library function, print.

nnletters' own errors become ``Error: <one line>`` and exit code 1 (``--debug`` shows the
traceback instead); bad usage is Click's exit code 2. Every command goes through the same
``handle_errors``. Only Click and the standard library are imported at module level: each
command imports what it needs when it runs, so that ``nnletters predict`` starts fast (NumPy,
Pillow and Click only).
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

# --------------------------------------------------------------------------- shared pieces


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


def _check_overrides(_ctx: click.Context, _param: click.Parameter,
                     items: tuple[str, ...]) -> tuple[str, ...]:
    for item in items:
        if "=" not in item or not item.partition("=")[0].strip():
            raise click.UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=0.01")
    return items


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", callback=_check_overrides,
    help="Override a config key (value parsed as YAML); repeatable.")
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False),
    help="YAML experiment config.")
run_argument = click.argument("target", required=False, metavar="[RUN_DIR|CHECKPOINT]")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _progress(quiet: bool = False) -> bool:
    return not quiet and sys.stderr.isatty()


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


# --------------------------------------------------------------------------- train


@main.command()
@config_option
@click.option("--resume", "resume_dir", type=click.Path(), metavar="RUN_DIR",
              help="Continue a stopped run from its last complete epoch (its own config.yaml "
                   "is used; --set train.epochs=N extends the run).")
@set_option
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (exactly this path).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no per-epoch lines.")
@click.option("--report", "make_report", is_flag=True,
              help="Write the pictures and report.html into RUN/report/ when training ends.")
@click.option("--dry-run", is_flag=True,
              help="Print the resolved config, the data and a model summary; train nothing.")
@click.option("--tensorboard", is_flag=True,
              help="Write TensorBoard event files into RUN/tensorboard/ (train.tensorboard; "
                   "the 'tensorboard' extra).")
@handle_errors
def train(config_path: str | None, resume_dir: str | None, overrides: tuple[str, ...],
          out: str | None, quiet: bool, make_report: bool, dry_run: bool,
          tensorboard: bool) -> None:
    """Train a model from a YAML config and write a run folder, or --resume a stopped run.

    Ctrl-C (or SIGTERM) stops between two steps, keeps the last complete epoch's checkpoint
    and exits 130 (143)."""
    from nnletters.run_folder import new_run_dir, resume_run, train_run

    if tensorboard:
        overrides = (*overrides, "train.tensorboard=true")
    if dry_run:
        from nnletters.config import load_config
        from nnletters.run_folder import dry_run as show

        source = config_path if resume_dir is None or config_path else \
            Path(resume_dir) / "config.yaml"
        show(load_config(source, overrides), click.echo)
        return
    if config_path is None and resume_dir is None:
        raise click.UsageError("Missing option '--config' (or '--resume RUN_DIR').")
    if resume_dir is not None and out is not None:
        raise click.UsageError("--resume continues the run in its own folder; drop --out.")
    log = (lambda _msg: None) if quiet else click.echo
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        start = functools.partial(resume_run, run_dir, overrides, config_path)
    else:
        from nnletters.config import load_config

        cfg = load_config(config_path, overrides)
        run_dir = new_run_dir(cfg, out)
        start = functools.partial(train_run, cfg, run_dir)
    try:
        run = start(progress=_progress(quiet), log=log)
    except KeyboardInterrupt as exc:
        click.echo(_interrupted_line(exc, run_dir), err=True)
        sys.exit(getattr(exc, "exit_code", 130))
    if quiet and run.summary.get("test_accuracy") is not None:
        click.echo(f"test accuracy {100 * run.summary['test_accuracy']:.2f}%  "
                   f"run folder {run_dir}")
    if make_report:
        from nnletters.report import write_report

        click.echo(f"report {write_report(run_dir, progress=_progress(quiet))['report.html']}")


def _interrupted_line(exc: KeyboardInterrupt, run_dir: Path) -> str:
    """One line for stderr: where training stopped and how to go on."""
    from nnletters.training import Interrupted

    if isinstance(exc, Interrupted):
        return exc.message()
    if (run_dir / "last.npz").exists():
        return f"Interrupted; resume with: nnletters train --resume {shlex.quote(str(run_dir))}"
    return "Interrupted before any epoch was saved; nothing to resume"


# --------------------------------------------------------------------------- eval, predict


@main.command("eval")
@run_argument
@click.option("--data", "data_path", type=click.Path(),
              help="Evaluate on all of this dataset instead of the run's test split.")
@json_option
@handle_errors
def eval_command(target: str | None, data_path: str | None, as_json: bool) -> None:
    """Accuracy, loss, per-class scores and confusion matrix of a run or checkpoint
    (default: the most recent run under runs/)."""
    from nnletters.evaluation import evaluate_checkpoint, format_evaluation

    result = evaluate_checkpoint(target, data_path, progress=_progress(as_json))
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"checkpoint {result['checkpoint']}")
        click.echo(format_evaluation(result))


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--checkpoint", "target", help="Run folder or .npz (default: the latest run).")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="How many of the most likely letters to show (and with --explain, to "
                   "draw maps of)  [default: 3; 1 with --explain]")
@json_option
@click.option("--explain", is_flag=True,
              help="Also write a saliency map of each image: the gradient of the predicted "
                   "letter's score with respect to every pixel.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the --explain pictures  [default: explain]")
@click.option("--smoothgrad", default=0, show_default=True, type=click.IntRange(min=0),
              metavar="N", help="With --explain: average the map over N copies of the image "
                                "with Gaussian noise added (std 0.15, seeded).")
@click.option("--score", type=click.Choice(["logit", "log_prob"]), default="logit",
              show_default=True, help="With --explain: the score whose gradient is drawn.")
@handle_errors
def predict(images: tuple[str, ...], target: str | None, top_k: int | None, as_json: bool,
            explain: bool, out: str | None, smoothgrad: int, score: str) -> None:
    """The letter in each IMAGE (files or folders of images), with probabilities; with
    --explain, a picture per image of the pixels that led to the answer."""
    if not explain and (out is not None or smoothgrad or score != "logit"):
        raise click.UsageError("--out, --smoothgrad and --score go with --explain.")
    if explain:
        from nnletters.explain import explain_images  # matplotlib only on this path

        results, errors = explain_images(list(images), target, top_k or 1, out or "explain",
                                         score, smoothgrad)
    else:
        from nnletters.prediction import predict_images

        results, errors = predict_images(list(images), target, top_k or 3)
    if as_json:
        click.echo(json.dumps(results))
    elif results:
        click.echo(f"checkpoint {results[0]['checkpoint']}")
        for r in results:
            click.echo(_prediction_line(r))
    for _path, message in errors:
        click.echo(f"Error: {message}", err=True)
    if errors:
        sys.exit(1)


def _prediction_line(r: dict[str, Any]) -> str:
    """``path: A (97.1%)   then H 1.2%  R 0.4%``, or the warning and the forced guess (and
    with --explain, the picture's path)."""
    guess = f"{r['label']} ({100 * r['probability']:.1f}%)"
    shown = f"   map {r['explanation']}" if "explanation" in r else ""
    if "warning" in r:
        return f"{r['path']}: {r['warning']} (the model's forced guess: {guess}){shown}"
    others = "  ".join(f"{label} {100 * p:.1f}%" for label, p in r["top_k"][1:])
    return f"{r['path']}: {guess}" + (f"   then {others}" if others else "") + shown


# --------------------------------------------------------------------------- report


@main.command("report")
@click.argument("runs", nargs=-1, metavar="[RUN_DIR]...")
@click.option("--data", "data_path", type=click.Path(),
              help="Report on all of this dataset instead of the run's test split.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the files (default: RUN_DIR/report/; with --compare, "
                   "a compare/ folder beside the first run).")
@click.option("--compare", is_flag=True,
              help="Compare two or more RUN_DIRs: their final figures and validation curves "
                   "in compare.html and compare.png.")
@click.option("--network-only", is_flag=True,
              help="Write only network.png, the drawing of the network (no data needed).")
@handle_errors
def report_command(runs: tuple[str, ...], data_path: str | None, out: str | None,
                   compare: bool, network_only: bool) -> None:
    """Pictures of a run (default: the latest under runs/): network.png, curves.png,
    confusion.png, mistakes.png, mistake_maps.png (saliency maps of the most confident
    mistakes), weights.png and a self-contained report.html."""
    if network_only:
        _network_only(runs, data_path, out, compare)
        return
    if compare:
        if len(runs) < 2:
            raise click.UsageError("--compare needs two or more RUN_DIRs.")
        if data_path is not None:
            raise click.UsageError("--data cannot be used with --compare.")
        from nnletters.report import write_compare

        png = write_compare(list(runs), out)
        click.echo(f"wrote {png.with_name('compare.html')} and {png.name} beside it")
        return
    if len(runs) > 1:
        raise click.UsageError("Give one RUN_DIR (or use --compare to compare several).")
    from nnletters.report import write_report

    written = write_report(runs[0] if runs else None, data_path, out, progress=_progress())
    click.echo(f"wrote {written['report.html']}")
    click.echo("  and " + ", ".join(str(p.name) for name, p in written.items()
                                    if name != "report.html") + " beside it")


def _network_only(runs: tuple[str, ...], data_path: str | None, out: str | None,
                  compare: bool) -> None:
    if compare or data_path is not None or len(runs) > 1:
        raise click.UsageError("--network-only draws one RUN_DIR; drop --compare and --data.")
    from nnletters.network_drawing import write_network

    path, layout = write_network(runs[0] if runs else None, out)
    click.echo(f"wrote {path} ({layout.style}: {'-'.join(map(str, layout.layer_sizes))})")


# --------------------------------------------------------------------------- gradcheck


@main.command("gradcheck")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML experiment config whose model and data to check.")
@set_option
@click.option("--samples", default=8, show_default=True, type=click.IntRange(min=1),
              help="Training samples the checked loss averages over.")
@click.option("--entries", default=64, show_default=True, type=click.IntRange(min=1),
              help="Entries checked per parameter tensor (a seeded random subset when larger).")
@click.option("--threshold", default=1e-4, show_default=True,
              type=click.FloatRange(min=0.0, min_open=True),
              help="Largest max relative error a tensor may show and pass.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per tensor.")
@handle_errors
def gradcheck(config_path: str, overrides: tuple[str, ...], samples: int, entries: int,
              threshold: float, as_json: bool) -> None:
    """Compare backprop's gradient of every parameter tensor with central finite
    differences in float64, on a few real training samples. Exits 1 if any tensor fails."""
    from nnletters.config import load_config
    from nnletters.gradcheck_report import (
        check_config_gradients,
        format_gradcheck,
        gradcheck_rows,
    )

    cfg = load_config(config_path, overrides)
    report = check_config_gradients(cfg, samples, entries, threshold,
                                    progress=_progress(as_json))
    click.echo(json.dumps(gradcheck_rows(report)) if as_json else format_gradcheck(report))
    if report.failed:
        raise click.ClickException(
            f"gradient check failed for {', '.join(report.failed)}: max relative error "
            f"above {threshold:g}, so backprop disagrees with the finite differences")


# --------------------------------------------------------------------------- config


@main.group("config")
def config_group() -> None:
    """Config files: every key, its default and what it accepts."""


@config_group.command("reference")
@handle_errors
def config_reference() -> None:
    """Print every config key as a Markdown table (the README's Config reference)."""
    from nnletters.config import reference_markdown

    click.echo(reference_markdown(), nl=False)


# --------------------------------------------------------------------------- data


@main.group("data")
def data_group() -> None:
    """Inspect datasets, render synthetic letters, manage the decoded-data cache."""


@data_group.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--split", "split_config", type=click.Path(path_type=Path), default=None,
              help="Config YAML whose seed and data fractions give the split to check for "
                   "train/test leakage.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Decoding processes; 0 picks one per core.")
@handle_errors
def inspect_command(path: Path, as_json: bool, split_config: Path | None, workers: int) -> None:
    """Report what the dataset at PATH holds: images per class, sizes and modes, unreadable
    files, blank images, identical images and conflicting labels."""
    from nnletters.data.inspect import format_inspection, inspect_dataset

    report = inspect_dataset(path, split_config=split_config, workers=workers, progress=True)
    click.echo(json.dumps(report, ensure_ascii=False) if as_json else format_inspection(report))


@data_group.command("cache")
@click.option("--clear", is_flag=True, help="Remove every cached dataset.")
@click.option("--dir", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="Cache folder (default: $NNLETTERS_CACHE_DIR or ~/.cache/nnletters).")
@handle_errors
def cache_command(clear: bool, cache_dir: Path | None) -> None:
    """Show the cache folder and its entries, or remove them with --clear."""
    from nnletters.data import cache

    folder = cache_dir.expanduser() if cache_dir else cache.default_cache_dir()
    found = cache.clear(folder) if clear else cache.entries(folder)
    total = _size(sum(e.size for e in found))
    if clear:
        click.echo(f"{folder}: removed {_count(len(found), 'entry', 'entries')} ({total})")
        return
    click.echo(f"{folder}: {_count(len(found), 'entry', 'entries')}, {total}")
    for entry in found:
        click.echo(f"  {entry.path.name}  {_size(entry.size)}")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n_bytes < 1024:
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} GB"


@data_group.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--letters", default="A-Z", show_default=True,
              help="Letters to render: a range 'A-J', a list 'ABC', or both 'A-E,X-Z'.")
@click.option("--size", type=click.IntRange(4, 256), default=28, show_default=True,
              help="Image width and height in pixels.")
@click.option("--per-class", type=click.IntRange(min=1), default=100, show_default=True,
              help="Images per letter.")
@click.option("--layout", type=click.Choice(["folders", "lists"]), default="folders",
              show_default=True,
              help="folders: OUT/A/A_00001.png ...; lists: OUT/images/ plus train.txt, "
                   "validate.txt, test.txt of 'path label' lines.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Same seed and same fonts give the same images.")
@click.option("--style", type=click.Choice(["notmnist", "ink"]), default="notmnist",
              show_default=True,
              help="notmnist: light letter filling a dark frame; ink: dark letter on white "
                   "(the teaching series' images).")
@handle_errors
def synth_command(out_dir: Path, letters: str, size: int, per_class: int, layout: str,
                  seed: int, style: str) -> None:
    """Render capital letters with this machine's fonts and write them to OUT_DIR."""
    from nnletters.data.synthetic import write_dataset

    summary = write_dataset(out_dir, letters, size, per_class, seed, layout=layout,
                            style=style, progress=True)
    splits = summary.get("splits")
    detail = (" (" + ", ".join(f"{name} {n}" for name, n in splits.items()) + ")"
              if splits else "")
    click.echo(f"wrote {summary['images']} images of {len(summary['letters'])} letters "
               f"({size}x{size}, {style} style, {len(summary['fonts'])} fonts) to {out_dir} "
               f"in the {layout} layout{detail}")


# --------------------------------------------------------------------------- export


@main.command("export")
@run_argument
@click.option("--format", "fmt", type=click.Choice(["onnx", "npz-plain"]), default="onnx",
              show_default=True,
              help="onnx: an ONNX graph (needs the 'export' extra); npz-plain: the weights "
                   "as plain arrays for any NumPy program.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Model file to write (model.onnx, model.npz); its JSON description goes "
                   "beside it with the suffix .json.")
@handle_errors
def export_command(target: str | None, fmt: str, out: str) -> None:
    """Write a run's model (default: the latest run) for use outside nnletters: the weights
    inference uses (EMA where the run used it), batch norm folded in, no dropout."""
    from nnletters.export import export_model

    written = export_model(target, fmt, out)
    click.echo(f"wrote {written['model']} and {written['json']}")


# --------------------------------------------------------------------------- lr-find


@main.command("lr-find")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML experiment config whose model, optimiser and data to test.")
@set_option
@click.option("--min", "min_lr", default=1e-6, show_default=True,
              type=click.FloatRange(min=0.0, min_open=True), help="First learning rate.")
@click.option("--max", "max_lr", default=10.0, show_default=True,
              type=click.FloatRange(min=0.0, min_open=True), help="Last learning rate.")
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=5),
              help="Mini-batches, the lr growing exponentially from --min to --max.")
@click.option("--out", type=click.Path(file_okay=False), default=".",
              help="Folder for lr_find.png  [default: the current folder]")
@handle_errors
def lr_find(config_path: str, overrides: tuple[str, ...], min_lr: float, max_lr: float,
            steps: int, out: str) -> None:
    """The learning-rate range test: train from the config's initial weights while the lr
    grows exponentially, plot the loss against the lr in lr_find.png and suggest an lr.
    Writes no checkpoint; Ctrl-C exits 130 with nothing written."""
    from nnletters.config import load_config
    from nnletters.lr_find import range_test, suggestion_line, write_lr_find

    if min_lr >= max_lr:
        raise click.UsageError(f"--min ({min_lr:g}) must be below --max ({max_lr:g}).")
    cfg = load_config(config_path, overrides)
    try:
        result = range_test(cfg, min_lr, max_lr, steps, progress=_progress(), log=click.echo)
    except KeyboardInterrupt as exc:
        click.echo("Interrupted; nothing written", err=True)
        sys.exit(getattr(exc, "exit_code", 130))
    click.echo(f"stopped after {len(result.lrs)} steps: {result.stop_reason}")
    click.echo(suggestion_line(result) + f"; the config has optim.lr {cfg.optim.lr:g}")
    click.echo(f"wrote {write_lr_find(result, out)}")


# --------------------------------------------------------------------------- tune


def _parse_seeds(_ctx: click.Context, _param: click.Parameter,
                 text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected seeds like 0,1,2, got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"expected distinct seeds >= 0, got {text!r}")
    return seeds


@main.command("tune")
@config_option
@click.option("--space", "space_path", type=click.Path(dir_okay=False),
              help="YAML mapping dotted config keys to distributions (log_uniform, uniform, "
                   "int, choice).")
@click.option("--trials", "n_trials", type=click.IntRange(min=1),
              help="Total trials of the study, over every run of this command "
                   "(default: 20, or the grid's size).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials at once on this machine, each with cores/K BLAS threads.")
@click.option("--storage", help="Optuna storage shared by workers: sqlite:///PATH, "
                                "postgresql://USER@HOST/DB, mysql://..., or journal:PATH "
                                "(default: sqlite OUT/study.db).")
@click.option("--study", "study_name", help="Study name (default: the base config's name).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Sweep folder (default: sweeps/<study>).")
@click.option("--seeds", callback=_parse_seeds, metavar="0,1,2",
              help="Train each trial once per seed; its value is the mean.")
@set_option
@click.option("--pruner", type=click.Choice(["none", "median", "hyperband"]),
              default="median", show_default=True, help="Stops hopeless trials early.")
@click.option("--grid", is_flag=True, help="Try every combination (choice and int entries).")
@click.option("--baseline", is_flag=True,
              help="Queue the base config's own values as a trial (once per study), so the "
                   "recipe you start from is ranked with the others.")
@click.option("--status", "status_dir", is_flag=False, flag_value="", default=None,
              metavar="[DIR]", help="Show the leaderboard of the sweep in DIR (or of "
                                    "--storage/--study) and write its files; train nothing.")
@click.option("--worker", is_flag=True, hidden=True)
@handle_errors
def tune_command(config_path: str | None, space_path: str | None, n_trials: int | None,
                 workers: int, storage: str | None, study_name: str | None, out: str | None,
                 seeds: tuple[int, ...], overrides: tuple[str, ...], pruner: str, grid: bool,
                 status_dir: str | None, worker: bool, baseline: bool) -> None:
    """Search hyper-parameters with Optuna: each trial is a run folder SWEEP/trials/NNNN/.

    Re-running the same command continues the study (--trials is a total); trials killed
    mid-run are resumed from their last.npz. Ctrl-C exits 130."""
    from nnletters import tuning, tuning_results

    tuning.check_storage_arg(storage)
    if status_dir is not None:
        folder = out or status_dir or ("" if storage else ".")
        sweep = tuning.Sweep(base="", space_path="", out=Path(folder) if folder else None,
                             storage=storage, study=study_name)
        click.echo(tuning_results.status(sweep, log=click.echo))
        return
    if config_path is None or space_path is None:
        raise click.UsageError("Missing option '--config' or '--space' (or use --status).")
    sweep = tuning.prepare(tuning.Sweep(
        base=config_path, space_path=space_path, out=Path(out or "sweeps/_"),
        n_trials=n_trials, overrides=overrides, storage=storage, study=study_name,
        seeds=seeds, pruner=pruner, grid=grid, baseline=baseline))
    if out is None:
        sweep.out = Path("sweeps") / str(sweep.study)
    try:
        if worker or workers == 1:
            tuning.work(sweep, click.echo)
        else:
            tuning.run_workers(sweep, workers, click.echo)
    except KeyboardInterrupt as exc:
        if not worker:  # the command that started the workers says it, once
            args = sys.argv[sys.argv.index("tune") + 1:] if "tune" in sys.argv else []
            click.echo(f"Interrupted; the study is kept. Go on with: nnletters tune "
                       f"{' '.join(shlex.quote(a) for a in args)}", err=True)
        sys.exit(getattr(exc, "exit_code", 130))
    if not worker:
        click.echo(tuning_results.status(sweep, log=click.echo))
