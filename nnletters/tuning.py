"""``nnletters tune``: a hyper-parameter study on Optuna, whose trials are ordinary run folders.

    SWEEP/
        study.db             the Optuna study (default storage: SQLite, no server needed)
        trials/0007/         trial 7's run folder (with --seeds: trials/0007/seed1/, ...)
        trials.csv           one row per trial
        best.yaml            the best trial's resolved config, for nnletters train --config
        report/tune.html     value per trial, each parameter against the value, top curves

Optuna owns the coordination: the sampler proposes, the pruner stops hopeless trials (each
epoch's val_accuracy is reported from a training callback), and the storage (SQLite, an RDB
server or a journal file) is what many workers on many machines share. nnletters adds the run
folders and what keeps a study whole: a trial killed mid-run (SIGKILL, Ctrl-C, a dead machine)
is retried in its own folder and resumed from its last.npz, and the trial count is a total
over every run of the command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nnletters.callbacks import Callback
from nnletters.errors import ConfigError, FolderBusy, NNLettersError
from nnletters.tuning_space import Param, base_params, check_space, load_space, space_json

PRUNERS = ("none", "median", "hyperband")
HEARTBEAT_SECONDS = 20  # a worker's trial is stale after GRACE_SECONDS without a heartbeat
GRACE_SECONDS = 60
MAX_RETRIES = 3


class TuneError(NNLettersError):
    """A study cannot be opened or does not match this command."""


class Surplus(Exception):  # noqa: N818 - a marker, not an error
    """This trial is not needed (the total is reached, or another trial owns its folder);
    it ends at once as failed with user attr ``surplus`` and is left out of every count."""


@dataclass
class Sweep:
    """What one ``nnletters tune`` command asks for."""

    base: str                       # BASE.yaml
    space_path: str
    out: Path
    n_trials: int | None = None     # None: the grid's size, else 20
    overrides: tuple[str, ...] = ()
    storage: str | None = None      # None: sqlite:///OUT/study.db
    study: str | None = None        # None: the base config's name
    seeds: tuple[int, ...] = ()     # () : the base config's seed, one run folder per trial
    pruner: str = "median"
    grid: bool = False
    space: list[Param] = field(default_factory=list)
    warmup: int = 0                 # epochs the median pruner waits before judging a trial
    baseline: bool = False          # --baseline: queue the base config's own values
    base_values: dict[str, Any] = field(default_factory=dict)  # ... as Optuna params

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"


def needs_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise NNLettersError("nnletters tune needs the 'tune' extra: pip install "
                             "'nnletters[tune]'") from None


def prepare(sweep: Sweep) -> Sweep:
    """Read and check the space against the base config (before any trial); -> the sweep
    with its space, study name and seeds filled in."""
    needs_optuna()
    space = load_space(sweep.space_path)
    cfg = check_space(space, sweep.base, sweep.overrides, sweep.space_path)
    if sweep.grid:
        for p in space:
            p.grid()  # refuses float ranges
    base_values = base_params(space, cfg, sweep.space_path) if sweep.baseline else {}
    return replace(sweep, space=space, study=sweep.study or cfg.name, base_values=base_values,
                   seeds=sweep.seeds or (cfg.seed,), warmup=cfg.train.epochs // 4)


# --------------------------------------------------------------------------- storage


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: an RDB URL with heartbeats (a killed worker's trial
    is retried), or ``journal:PATH`` (a journal file, no server)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise TuneError(f"--storage {url}: folder {path.parent} does not exist")
        return JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        kwargs = {"connect_args": {"timeout": 120}}  # workers wait for each other's writes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(_driver_url(url), engine_kwargs=kwargs,
                                 heartbeat_interval=HEARTBEAT_SECONDS,
                                 grace_period=GRACE_SECONDS,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                     MAX_RETRIES))
    except ImportError as exc:
        name = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None)
        raise TuneError(f"--storage {_safe(url)}: the database driver is missing ({name}); "
                        "pip install 'nnletters[tune]' has PostgreSQL's (psycopg2)") from None
    except Exception as exc:  # SQLAlchemy's errors: a bad URL, a server that is not there
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TuneError(f"--storage {_safe(url)}: cannot open the study storage: "
                        f"{first}") from None
    if url.startswith("sqlite:"):
        _write_lock_on_begin(storage.engine)
    return storage


def _write_lock_on_begin(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    Optuna hands a queued trial to one worker by reading its state (WAITING) and then
    writing RUNNING, in one transaction with SELECT ... FOR UPDATE. SQLite has no FOR
    UPDATE, and Python's sqlite3 only opens the transaction at the write. So two workers
    could both read WAITING, and both would run the same trial (measured: 3 times in 20
    with two workers popping at once). With BEGIN IMMEDIATE, the second worker waits and
    then reads RUNNING. This is SQLAlchemy's documented recipe for pysqlite transactions.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # sqlite3 emits no BEGIN of its own

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the hooks existed are not reused


def _driver_url(url: str) -> str:
    """SQLAlchemy 2.1 reads postgresql:// as psycopg 3; the tune extra installs psycopg2,
    so name it when psycopg 3 is not there."""
    import importlib.util

    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme) and importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + url.removeprefix(scheme)
    return url


def _safe(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        cred, _, host = rest.rpartition("@")
        return f"{scheme}://{cred.split(':')[0]}:***@{host}" if ":" in cred else url
    return url


def open_study(sweep: Sweep, create: bool = True) -> Any:
    """Create or load the study; refuses one created with another space or seeds."""
    import optuna

    # ERROR: a failed trial is one line of ours, not Optuna's warning with a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if create:
        _make_out(sweep.out)
    storage = open_storage(sweep.storage_url)
    try:
        study = optuna.create_study(
            storage=storage, study_name=sweep.study, direction="maximize",
            sampler=make_sampler(sweep), pruner=make_pruner(sweep),
            load_if_exists=True) if create else optuna.load_study(
            study_name=sweep.study, storage=storage)
    except KeyError:
        raise TuneError(f"no study {sweep.study!r} in {_safe(sweep.storage_url)}") from None
    if create:
        _check_same(study, sweep)
        _queue_baseline(study, sweep)
    return study


def _queue_baseline(study: Any, sweep: Sweep) -> None:
    """--baseline: queue the base config's own values once per study, so the recipe one
    starts from is judged like every trial (same seeds, same pruner) and ranked with them."""
    if not sweep.baseline or any(t.user_attrs.get("baseline")
                                     for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial(sweep.base_values, user_attrs={"baseline": True})


def _make_out(out: Path) -> None:
    try:
        (out / "trials").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TuneError(f"cannot create sweep folder {out}: {exc.strerror or exc}") from None


def _check_same(study: Any, sweep: Sweep) -> None:
    """The first worker records the space and seeds; every later one must match them."""
    mine = {"space": space_json(sweep.space), "seeds": list(sweep.seeds)}
    attrs = study.user_attrs
    if "space" not in attrs:
        for key, value in mine.items():
            study.set_user_attr(key, value)
        study.set_user_attr("base", str(Path(sweep.base).resolve()))
        return
    if attrs["space"] != mine["space"]:
        raise TuneError(f"study {sweep.study!r} in {_safe(sweep.storage_url)} was created with "
                        f"another space; use another --study (or --out) for this one")
    if attrs.get("seeds") != mine["seeds"]:
        raise TuneError(f"study {sweep.study!r} was created with --seeds "
                        f"{','.join(map(str, attrs.get('seeds', [])))}, not "
                        f"{','.join(map(str, sweep.seeds))}")


def make_sampler(sweep: Sweep) -> Any:
    import optuna

    if sweep.grid:
        return optuna.samplers.GridSampler({p.key: p.grid() for p in sweep.space})
    # constant_liar: running trials count as bad guesses, so parallel workers spread out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(constant_liar=True)


def make_pruner(sweep: Sweep) -> Any:
    import optuna

    if sweep.pruner == "median":
        # a quarter of the epochs before judging: early epochs rank runs poorly
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=sweep.warmup)
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def grid_size(sweep: Sweep) -> int:
    size = 1
    for p in sweep.space:
        size *= len(p.grid())
    return size


def total_trials(sweep: Sweep) -> int:
    """--trials, at most the grid's size with --grid (default: the grid, or 20)."""
    if sweep.grid:
        return min(sweep.n_trials or grid_size(sweep), grid_size(sweep))
    return sweep.n_trials or 20


# --------------------------------------------------------------------------- bookkeeping


def counted(t: Any) -> bool:
    """Whether a trial counts towards the total: finished for good, running or queued.
    Left out: surplus trials, and trials killed or interrupted (their retry counts)."""
    from optuna.trial import TrialState

    if t.state == TrialState.FAIL:
        return "error" in t.user_attrs
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                       TrialState.WAITING)


def retry(study: Any, trial: Any) -> None:
    """Queue a killed or interrupted trial again, with its parameters and its folder (a
    user attr), so that it resumes from the folder's last.npz."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        RetryHeartbeatStaleTrialCallback(MAX_RETRIES)(study, trial)


def reclaim_dead_trials(study: Any) -> list[int]:
    """RUNNING trials of a dead process on this machine -> failed and queued again; -> their
    numbers. (Optuna's heartbeat does this for RDB storages on any machine, but only after
    its grace period; here we know at once, and the journal storage has no heartbeat.)"""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    host, reclaimed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not pid or _alive(int(pid)):
            continue
        try:
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker got there first
        retry(study, study._storage.get_trial(t._trial_id))
        reclaimed.append(t.number)
    return reclaimed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is dead: its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def claim(study: Any, trial: Any, n_trials: int) -> str:
    """The folder this trial trains in (relative to the sweep); Surplus if it is not needed:
    the total is reached by earlier trials, or an earlier live trial owns the same folder."""
    from optuna.trial import TrialState

    folder = trial.user_attrs.get("folder")
    others = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
    if folder is None:
        if sum(counted(t) for t in others) >= n_trials:
            raise Surplus(f"the study already has {n_trials} trials")
        return f"trials/{trial.number:04d}"
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    if any(t.user_attrs.get("folder") == folder and t.state in live for t in others):
        raise Surplus(f"{folder} is another trial's")
    return folder


# --------------------------------------------------------------------------- one trial


class ReportToTrial(Callback):
    """Reports each epoch's val_accuracy to the Optuna trial and stops the run when the
    pruner says so (the run folder's summary.json then gives the reason and epoch)."""

    def __init__(self, trial: Any, report: bool = True) -> None:
        self.trial, self.report = trial, report
        self.resumed_from = 0

    def on_train_begin(self, trainer: Any) -> None:
        super().on_train_begin(trainer)
        self.resumed_from = trainer.state.epoch
        if self.report:  # a resumed run: the epochs before the kill, for the pruner
            for row in trainer.state.history:
                if row.get("val_accuracy") is not None:
                    self.trial.report(row["val_accuracy"], row["epoch"])

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        if not self.report or row.get("val_accuracy") is None:
            return
        self.trial.report(row["val_accuracy"], row["epoch"])
        if self.trial.should_prune():
            row["pruned"] = True
            pruner = type(self.trial.study.pruner).__name__
            self.trainer.request_stop(f"pruned by Optuna's {pruner} at epoch {row['epoch']}")


@dataclass
class Objective:
    """Optuna's objective: one trial = one run folder per seed; value = mean best
    val_accuracy over the seeds."""

    sweep: Sweep
    log: Callable[[str], None]
    current: int | None = None  # the storage id of the trial being run

    def __call__(self, trial: Any) -> float:
        import optuna

        sweep, self.current = self.sweep, trial._trial_id
        try:
            folder = claim(trial.study, trial, total_trials(sweep))
        except Surplus as exc:
            trial.set_user_attr("surplus", str(exc))
            raise
        for key, value in (("folder", folder), ("host", socket.gethostname()),
                           ("pid", os.getpid()), ("blas_threads", blas_threads()),
                           ("interrupted", False)):  # a retry starts afresh
            trial.set_user_attr(key, value)
        params = {p.key: p.decode(suggest(trial, p)) for p in sweep.space}
        runs: list[Any] = []
        try:
            for i, seed in enumerate(sweep.seeds):
                runs.append(self._run(trial, folder, params, seed, i))
                if _pruned(runs[0]):
                    break  # the other seeds would not change the verdict
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except FolderBusy as exc:
            # Another process trains this folder: in practice the trial this one retries,
            # whose worker is alive after all (its heartbeat went stale while it was paused).
            # It goes on there, and records its run; this copy is not needed.
            trial.set_user_attr("surplus", str(exc))
            self.log(f"trial {trial.number} ({folder}): not needed, another process is "
                     "training in that folder")
            raise Surplus(str(exc)) from None
        except NNLettersError as exc:
            trial.set_user_attr("error", str(exc))
            self.log(f"trial {trial.number} ({folder}): failed: {exc}")
            raise
        value = record_runs(trial, runs, sweep.seeds)
        if _pruned(runs[0]):
            epoch = runs[0].summary["epochs_run"]
            trial.set_user_attr("pruned_epoch", epoch)
            self.log(f"trial {trial.number} ({folder}): pruned at epoch {epoch}")
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")
        self.log(f"trial {trial.number} ({folder}): value {100 * value:.2f}%"
                 + _spread_text(trial) + "  " + _params_text(params))
        return value

    def _run(self, trial: Any, folder: str, params: dict[str, Any], seed: int, i: int) -> Any:
        import nnletters

        sweep = self.sweep
        run_dir = sweep.out / folder
        if len(sweep.seeds) > 1:
            run_dir = run_dir / f"seed{seed}"
        report = ReportToTrial(trial, report=i == 0 and sweep.pruner != "none")
        if (run_dir / "last.npz").exists():
            run = nnletters.resume(run_dir, callbacks=[report])
            trial.set_user_attr(f"resumed_from_seed{seed}", report.resumed_from)
            return run
        items = [p.override(params[p.key]) for p in sweep.space]
        cfg = trial_config(sweep, items, seed, folder)
        return nnletters.train(cfg, out=run_dir, callbacks=[report])


def _pruned(run: Any) -> bool:
    return "pruned by Optuna" in (run.summary.get("stop_reason") or "")


def trial_config(sweep: Sweep, items: list[str], seed: int, folder: str) -> Any:
    from nnletters.config import load_config

    base = load_config(sweep.base, sweep.overrides)
    name = f"{base.name}-{Path(folder).name}"
    return load_config(sweep.base, (*sweep.overrides, *items, f"seed={seed}",
                                    f"name={name}"))


def suggest(trial: Any, p: Param) -> Any:
    if p.kind == "choice":
        return trial.suggest_categorical(p.key, p.distribution().choices)
    if p.kind == "int":
        return trial.suggest_int(p.key, *p.values)
    return trial.suggest_float(p.key, *p.values, log=p.kind == "log_uniform")


def record_runs(trial: Any, runs: list[Any], seeds: tuple[int, ...]) -> float:
    """User attrs of the trial from its runs; -> its value (mean best val_accuracy)."""
    values = [max((r["val_accuracy"] for r in run.history
                   if r.get("val_accuracy") is not None), default=0.0) for run in runs]
    tests = [run.summary.get("test_accuracy") for run in runs]
    trial.set_user_attr("values", values)
    trial.set_user_attr("spread", statistics.stdev(values) if len(values) > 1 else 0.0)
    if all(t is not None for t in tests):
        trial.set_user_attr("test_accuracy", statistics.fmean(tests))
        trial.set_user_attr("test_accuracies", tests)
    trial.set_user_attr("epochs", [run.summary["epochs_run"] for run in runs])
    trial.set_user_attr("seconds", round(sum(run.summary["total_seconds"] for run in runs), 1))
    trial.set_user_attr("stop_reason", runs[0].summary.get("stop_reason"))
    trial.set_user_attr("seeds", list(seeds))
    trial.set_user_attr("config", (runs[0].path / "config.yaml").read_text("utf-8"))
    return statistics.fmean(values)


def _spread_text(trial: Any) -> str:
    values = trial.user_attrs.get("values", [])
    return f" +- {100 * trial.user_attrs['spread']:.2f} ({len(values)} seeds)" \
        if len(values) > 1 else ""


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def blas_threads() -> int | None:
    """Threads of the BLAS NumPy uses in this process (threadpoolctl's figure)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return max((p["num_threads"] for p in pools), default=None)


# --------------------------------------------------------------------------- workers


def work(sweep: Sweep, log: Callable[[str], None]) -> None:
    """One worker: run trials until the study holds ``total_trials`` of them (queued
    retries first). Ctrl-C queues the trial it stopped and re-raises."""
    study = open_study(sweep)
    n_trials = total_trials(sweep)
    for number in reclaim_dead_trials(study):
        log(f"trial {number} was killed mid-run; queued again to resume in its folder")
    objective = Objective(sweep, log)
    while _has_work(study, n_trials):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study.optimize(objective, n_trials=1, catch=(NNLettersError, Surplus))
        except KeyboardInterrupt:
            _requeue_interrupted(study, objective.current)
            raise
        except ValueError:  # Optuna's "Cannot tell a FAIL trial", or the objective's own
            if not _failed_while_running(study, objective.current, log):
                raise


def _failed_while_running(study: Any, trial_id: int | None, log: Callable[[str], None]
                          ) -> bool:
    """After Optuna refused to record this worker's trial: if another worker had failed it as
    stale (no heartbeat for GRACE_SECONDS: this process was paused, a laptop asleep say),
    which left a retry of it in the study, make sure a retry is queued or running: it
    resumes the run folder from its last.npz and records the trial. -> whether that was the
    case (if not, the ValueError is the objective's own, and the caller re-raises it)."""
    from optuna.trial import TrialState

    if trial_id is None:
        return False
    t = study._storage.get_trial(trial_id)
    trials = study.get_trials(deepcopy=False)
    if t.state != TrialState.FAIL or not any(
            t.number in o.system_attrs.get("retry_history", ()) for o in trials):
        return False
    folder = t.user_attrs.get("folder")
    pending = (TrialState.WAITING, TrialState.RUNNING)
    if not any(o.user_attrs.get("folder") == folder and o.state in pending for o in trials):
        retry(study, t)
    log(f"trial {t.number} ({folder}): another worker failed it as stale while it ran (no "
        f"heartbeat for {GRACE_SECONDS} s); a retry resumes its folder and records it")
    return True


def _has_work(study: Any, n_trials: int) -> bool:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    return sum(counted(t) for t in trials) < n_trials


def _requeue_interrupted(study: Any, trial_id: int | None) -> None:
    """Queue the trial Ctrl-C stopped (Optuna has marked it failed) to resume later."""
    from optuna.trial import TrialState

    if trial_id is None:
        return
    t = study._storage.get_trial(trial_id)
    if t.state == TrialState.FAIL and t.user_attrs.get("interrupted"):
        retry(study, t)


def worker_env(threads: int) -> dict[str, str]:
    """The environment of a worker process: its BLAS pools sized before NumPy loads."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        env[var] = str(threads)
    return env


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def worker_args(sweep: Sweep) -> list[str]:
    """``nnletters tune`` arguments that make a worker process of this sweep."""
    args = ["--config", sweep.base, "--space", sweep.space_path, "--out", str(sweep.out),
            "--storage", sweep.storage_url, "--study", str(sweep.study),
            "--trials", str(total_trials(sweep)), "--pruner", sweep.pruner,
            "--seeds", ",".join(map(str, sweep.seeds)), "--worker"]
    for item in sweep.overrides:
        args += ["--set", item]
    return args + (["--grid"] if sweep.grid else [])


def run_workers(sweep: Sweep, workers: int, log: Callable[[str], None]) -> None:
    """K worker processes on this machine, each with cores/K BLAS threads; waits for all.
    Ctrl-C or SIGTERM here is passed on to each worker as one SIGINT; once they have
    queued their trials again, the KeyboardInterrupt propagates."""
    open_study(sweep)  # storage tables and study made once, not raced by the workers
    threads = max(1, cores() // workers)
    log(f"{workers} workers, {threads} BLAS thread(s) each")
    cmd = [sys.executable, "-m", "nnletters", "tune", *worker_args(sweep)]
    # Their own sessions: Ctrl-C reaches this process only, which passes one SIGINT on (a
    # second one would stop a worker at once, in the middle of a write).
    procs = [subprocess.Popen(cmd, env=worker_env(threads), start_new_session=True)
             for _ in range(workers)]
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    bad = [c for c in codes if c != 0]
    if bad:
        raise TuneError(f"{len(bad)} of {workers} workers failed (exit code "
                        f"{', '.join(map(str, bad))}); run the same command again to go on")


def check_storage_arg(storage: str | None) -> None:
    if storage is not None and not (storage.startswith("journal:") or "://" in storage):
        raise ConfigError(f"--storage {storage}: expected a database URL (sqlite:///PATH, "
                          "postgresql://USER@HOST/DB, mysql://...) or journal:PATH")
