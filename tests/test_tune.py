"""``nnletters tune`` against real Optuna storages: SQLite, a journal file, PostgreSQL.

Trials train tiny MLPs on a few synthetic letters (configs/quickstart.yaml made small), so a
trial takes about a second. Workers are real processes. Kills and interrupts are placed with
the test hooks of ``nnletters.fileio`` (the process stops or SIGKILLs itself in the middle of
a named write), so nothing depends on timing.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nnletters.checkpoint import load_checkpoint
from nnletters.cli import main
from nnletters.fileio import CRASH_ENV, STOP_ENV

optuna = pytest.importorskip("optuna", reason="the 'tune' extra (optuna) is not installed")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
SMALL = ("data.synthetic.per_class=20", "data.synthetic.letters=A-E", "train.epochs=3",
         "train.early_stopping.enabled=false")
SPACE = """\
optim.lr: {log_uniform: [1.0e-3, 3.0e-2]}
model.hidden: {choice: [[16], [32, 16]]}
"""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and flock")


def sets(*extra: str) -> list[str]:
    return [a for item in (*SMALL, *extra) for a in ("--set", item)]


def tune_args(tmp_path: Path, *args: str, space: str = SPACE) -> list[str]:
    (tmp_path / "space.yaml").write_text(space)
    return ["tune", "--config", str(QUICKSTART), "--space", str(tmp_path / "space.yaml"),
            "--out", str(tmp_path / "sweep"), *sets(), *args]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, STOP_ENV)}
    env.update({"PYTHONPATH": str(REPO), **extra})
    return env


def run_tune(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnletters", *args], env=child_env(**env),
                          capture_output=True, text=True, timeout=600)


def start_stopped(args: list[str], stop_at: str) -> subprocess.Popen:
    """``nnletters ARGS`` in a child, returned once it has stopped itself (SIGSTOP) during
    its write of ``stop_at`` (NAME:N)."""
    proc = subprocess.Popen([sys.executable, "-m", "nnletters", *args],
                            env=child_env(**{STOP_ENV: stop_at}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"ended before stopping at {stop_at}: {proc.stderr.read()}"
    return proc


def load(tmp_path: Path, storage: str | None = None):
    url = storage or f"sqlite:///{tmp_path / 'sweep' / 'study.db'}"
    return optuna.load_study(study_name="quickstart", storage=_storage(url))


def _storage(url: str):
    from nnletters.tuning import open_storage

    return open_storage(url)


def finished(study) -> list:
    return [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]


def best_val(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(r["val_accuracy"] for r in rows)


def epochs_in(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"]
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- SQLite, 2 workers


def test_six_trials_two_workers_sqlite_then_rerun_adds_none(tmp_path):
    args = tune_args(tmp_path, "--trials", "6", "--workers", "2", "--pruner", "none")
    first = run_tune(args)
    assert first.returncode == 0, first.stderr
    study = load(tmp_path)
    trials = finished(study)
    assert len(trials) == 6
    # a worker that asked for a 7th trial while the 6th was starting ended it at once
    assert all("surplus" in t.user_attrs for t in study.get_trials() if t not in trials)
    folders = [t.user_attrs["folder"] for t in trials]
    assert len(set(folders)) == 6
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6
    # two workers, each with cores/2 BLAS threads: no oversubscription
    assert {t.user_attrs["blas_threads"] for t in trials} == {max(1, os.cpu_count() // 2)}
    sweep = tmp_path / "sweep"
    for t in trials:  # the value is the run folder's best val_accuracy
        assert t.value == best_val(sweep / t.user_attrs["folder"])
    best = max(trials, key=lambda t: t.value)
    assert (yaml.safe_load((sweep / "best.yaml").read_text())
            == yaml.safe_load((sweep / best.user_attrs["folder"] / "config.yaml").read_text()))
    board = first.stdout.splitlines()
    head = next(i for i, line in enumerate(board) if line.startswith("trial ") and "val %" in line)
    assert board[head + 1].split()[0] == str(best.number)
    assert f"{100 * best.value:.2f}" in board[head + 1]
    rows = (sweep / "trials.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[1].startswith(f"{best.number},")
    assert (sweep / "report" / "tune.html").exists()

    again = run_tune(args)
    assert again.returncode == 0, again.stderr
    assert len(finished(load(tmp_path))) == 6
    assert len(load(tmp_path).get_trials()) == len(study.get_trials())  # none asked for
    assert sorted(p.name for p in (sweep / "trials").iterdir()) == sorted(
        Path(f).name for f in folders)


def _pop_queued(url: str, barrier, rounds: int, got) -> None:
    """A worker of the test below: at each round, take a queued trial as Optuna does."""
    import optuna

    from nnletters.tuning import open_storage

    study = optuna.load_study(study_name="race", storage=open_storage(url))
    for _ in range(rounds):
        barrier.wait()  # the trial is queued: every worker asks for it at once
        got.put(study._pop_waiting_trial_id())
        barrier.wait()


def test_a_queued_trial_goes_to_one_worker_of_many_on_sqlite(tmp_path):
    """Optuna takes a queued trial by reading WAITING and writing RUNNING; on SQLite both
    workers could read WAITING and run the same trial (3 rounds in 20 before the fix)."""
    import multiprocessing

    import optuna

    from nnletters.tuning import open_storage

    url, workers, rounds = f"sqlite:///{tmp_path / 'study.db'}", 3, 60
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    ctx = multiprocessing.get_context("spawn")
    barrier, got = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_pop_queued, args=(url, barrier, rounds, got))
             for _ in range(workers)]
    for p in procs:
        p.start()
    taken = []
    try:
        for _ in range(rounds):
            study.enqueue_trial({}, skip_if_exists=False)
            barrier.wait(timeout=120)
            barrier.wait(timeout=120)
            popped = [got.get(timeout=120) for _ in procs]
            taken.append(sorted(popped, key=lambda x: x is None))
    finally:
        for p in procs:
            p.join(timeout=120)
    queued = [t._trial_id for t in study.get_trials(deepcopy=False)]
    assert [ids[0] for ids in taken] == queued  # each round's trial went to a worker ...
    twice = [ids for ids in taken if ids[1:] != [None] * (workers - 1)]
    assert not twice  # ... and to one worker only


# --------------------------------------------------------------------------- journal file


def test_two_processes_share_one_journal_file(tmp_path):
    """The first process stops itself while writing its first trial's summary.json; the
    second then does the rest of the study, and the first finishes its own trial."""
    storage = f"journal:{tmp_path / 'study.log'}"
    args = tune_args(tmp_path, "--trials", "4", "--storage", storage, "--pruner", "none")
    first = start_stopped(args, "summary.json:1")
    try:
        second = run_tune(args)
        assert second.returncode == 0, second.stderr
    finally:
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    trials = finished(load(tmp_path, storage))
    assert len(trials) == 4 and len({t.user_attrs["folder"] for t in trials}) == 4
    by_pid = [t.user_attrs["pid"] for t in trials]
    assert by_pid.count(first.pid) == 1 and len(set(by_pid)) == 2


# --------------------------------------------------------------------------- kills


def test_sigkilled_worker_then_rerun_resumes_the_killed_trial(tmp_path):
    args = tune_args(tmp_path, "--trials", "3", "--pruner", "none")
    killed = run_tune(args, **{CRASH_ENV: "last.npz:2"})  # dies writing epoch 2 of trial 0
    assert killed.returncode == -signal.SIGKILL
    run0 = tmp_path / "sweep" / "trials" / "0000"
    assert load_checkpoint(run0 / "last.npz").meta["epoch"] == 1

    again = run_tune(args)
    assert again.returncode == 0, again.stderr
    assert "trial 0 was killed mid-run; queued again to resume in its folder" in again.stdout
    study = load(tmp_path)
    trials = finished(study)
    assert len(trials) == 3
    resumed = [t for t in trials if t.user_attrs["folder"] == "trials/0000"]
    assert len(resumed) == 1 and resumed[0].user_attrs["resumed_from_seed0"] == 1
    assert resumed[0].system_attrs["failed_trial"] == 0
    assert epochs_in(run0) == [1, 2, 3]
    assert not (tmp_path / "sweep" / "trials" / f"{resumed[0].number:04d}").exists()


@pytest.mark.parametrize("pruner", ["none", "median"])  # median: each epoch is reported
def test_a_paused_worker_failed_as_stale_goes_on_and_its_trial_is_recorded(tmp_path, pruner):
    """A worker paused mid-trial (a laptop asleep) loses its heartbeat; another worker then
    fails its trial as stale and queues a retry, as Optuna's heartbeat does. The retry finds
    the folder still held, and ends as not needed; the paused worker, once back, finishes its
    trial, which Optuna refuses to record, and a new retry records the finished run."""
    import sqlite3

    args = tune_args(tmp_path, "--trials", "2", "--pruner", pruner)
    paused = start_stopped(args, "last.npz:2")  # trial 0, epoch 2 of 3
    try:
        db = sqlite3.connect(tmp_path / "sweep" / "study.db")
        with db:  # its last heartbeat, as if it had slept for 10 minutes since
            aged = db.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, "
                              "'-10 minutes')").rowcount
        assert aged == 1  # trial 0's heartbeat, recorded when it started
        db.close()
        study = load(tmp_path)
        with pytest.warns(optuna.exceptions.ExperimentalWarning):
            optuna.storages.fail_stale_trials(study)  # what any other worker does first
        other = run_tune(args)
        assert other.returncode == 0, other.stderr
        assert ("trial 1 (trials/0000): not needed, another process is training in that "
                "folder") in other.stdout
    finally:
        os.kill(paused.pid, signal.SIGCONT)
        out, err = paused.communicate(timeout=600)
    assert paused.returncode == 0, err
    assert ("trial 0 (trials/0000): another worker failed it as stale while it ran (no "
            "heartbeat for 60 s); a retry resumes its folder and records it") in out
    trials = finished(load(tmp_path))
    run0 = tmp_path / "sweep" / "trials" / "0000"
    recorded = [t for t in trials if t.user_attrs["folder"] == "trials/0000"]
    assert len(recorded) == 1 and recorded[0].value == best_val(run0)
    assert epochs_in(run0) == [1, 2, 3]  # trained once, by the paused worker
    assert len(trials) == 3  # the other worker's two, and trial 0's finished run


def test_ctrl_c_exits_130_with_a_hint_and_the_trial_resumes(tmp_path):
    args = tune_args(tmp_path, "--trials", "2", "--pruner", "none")
    proc = start_stopped(args, "last.npz:2")  # mid-write of trial 0's epoch 2
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130
    assert err.splitlines()[-1].startswith("Interrupted; the study is kept. Go on with: "
                                           "nnletters tune --config ")
    again = run_tune(args)
    assert again.returncode == 0, again.stderr
    trials = finished(load(tmp_path))
    assert len(trials) == 2
    resumed = next(t for t in trials if t.user_attrs["folder"] == "trials/0000")
    assert resumed.user_attrs["resumed_from_seed0"] == 2
    assert epochs_in(tmp_path / "sweep" / "trials" / "0000") == [1, 2, 3]


# --------------------------------------------------------------------------- in-process


def test_seeds_give_one_folder_each_mean_value_and_reproducible_configs(tmp_path, monkeypatch):
    import nnletters

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, tune_args(tmp_path, "--trials", "1", "--seeds", "3,5"))
    assert result.exit_code == 0, result.output
    (trial,) = finished(load(tmp_path))
    runs = [tmp_path / "sweep" / "trials" / "0000" / f"seed{s}" for s in (3, 5)]
    values = [best_val(r) for r in runs]
    assert trial.value == pytest.approx(statistics.fmean(values))
    assert trial.user_attrs["spread"] == pytest.approx(statistics.stdev(values))
    assert trial.user_attrs["seeds"] == [3, 5]
    # the run folder's config trains the same run again
    cfg = nnletters.load_config(runs[1] / "config.yaml")
    assert cfg.seed == 5
    again = nnletters.train(cfg, out=tmp_path / "again")
    summary = json.loads((runs[1] / "summary.json").read_text())
    assert again.summary["test_accuracy"] == summary["test_accuracy"]
    assert [r["val_loss"] for r in again.history] == [
        json.loads(line)["val_loss"] for line in (runs[1] / "metrics.jsonl").read_text()
        .splitlines()]


def test_pruned_trial_is_recorded_in_optuna_and_in_its_run_folder(tmp_path):
    from nnletters import tuning

    (tmp_path / "space.yaml").write_text(SPACE)
    sweep = tuning.prepare(tuning.Sweep(base=str(QUICKSTART),
                                        space_path=str(tmp_path / "space.yaml"),
                                        out=tmp_path / "sweep", overrides=SMALL, n_trials=1))
    tuning._make_out(sweep.out)
    study = optuna.create_study(storage=sweep.storage_url, study_name="pruned",
                                direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    study.optimize(tuning.Objective(sweep, lambda _msg: None), n_trials=1)
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["pruned_epoch"] == 1 and list(trial.intermediate_values) == [1]
    summary = json.loads((sweep.out / "trials" / "0000" / "summary.json").read_text())
    assert summary["epochs_run"] == 1
    assert summary["stop_reason"] == "pruned by Optuna's ThresholdPruner at epoch 1"


def test_a_diverging_trial_fails_with_its_reason_and_the_grid_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = "optim.lr: {choice: [0.01, 1.0e+6]}\nmodel.hidden: {choice: [[16]]}\n"
    result = CliRunner().invoke(main, tune_args(tmp_path, "--grid", "--set", "optim.name=sgd",
                                                space=space))
    assert result.exit_code == 0, result.output
    trials = load(tmp_path).get_trials()
    assert sorted(t.params["optim.lr"] for t in trials) == ["0.01", "1000000.0"]
    failed = next(t for t in trials if t.params["optim.lr"] == "1000000.0")
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "training diverged" in failed.user_attrs["error"]
    assert "fail: " in result.output and "training diverged" in result.output


def test_a_bug_raising_valueerror_in_a_trial_is_not_taken_for_a_stale_one(tmp_path,
                                                                         monkeypatch):
    """Only a trial another worker failed (and retried) is queued again after Optuna
    refuses it; a ValueError of the objective's own stops the worker, retrying nothing."""
    import nnletters

    def broken(*args, **kwargs):
        raise ValueError("a bug in training")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nnletters, "train", broken)
    result = cli_tune(tmp_path, "--trials", "2", "--pruner", "none")
    assert isinstance(result.exception, ValueError)
    assert str(result.exception) == "a bug in training"
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]
    assert "stale" not in result.output


# --------------------------------------------------------------------------- bad input


def cli_tune(tmp_path: Path, *args: str, space: str = SPACE):
    return CliRunner().invoke(main, tune_args(tmp_path, *args, space=space))


def test_unknown_key_is_refused_like_train_before_any_trial(tmp_path):
    space = tmp_path / "space.yaml"
    result = cli_tune(tmp_path, space="optim.lrr: {uniform: [0.1, 0.2]}\n")
    train = CliRunner().invoke(main, ["train", "--config", str(QUICKSTART),
                                      "--set", "optim.lrr=0.1"])
    assert train.output == ("Error: --set optim.lrr=0.1: unknown key 'optim.lrr' "
                            "(did you mean 'optim.lr'?)\n")
    assert (result.exit_code, result.output) == (
        1, f"Error: {space}: unknown key 'optim.lrr' (did you mean 'optim.lr'?)\n")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(("space", "message"), [
    ("model.dropout: {uniform: [0.0, 1.5]}\n",
     "model.dropout: expected a number >= 0 and < 1, got 1.5"),
    ("optim.lr: 0.1\n", "optim.lr: expected one distribution (log_uniform, uniform, int, "
                        "choice), e.g. {uniform: [0.0, 0.5]}, got 0.1"),
    ("optim.lr: {normal: [0, 1]}\n", "optim.lr: unknown distribution 'normal'; expected one "
                                     "of log_uniform, uniform, int, choice"),
    ("optim.lr: {log_uniform: [0, 1]}\n", "optim.lr: log_uniform: expected low > 0, "
                                          "got [0, 1]"),
    ("train.epochs: {int: [5, 2]}\n", "train.epochs: int: expected low <= high, got [5, 2]"),
    ("model.hidden: {choice: [[16], [0]]}\n",
     "model.hidden: expected a list of positive whole numbers, e.g. [512, 256], got [0]"),
])
def test_bad_space_is_one_error_line(tmp_path, space, message):
    result = cli_tune(tmp_path, space=space)
    assert (result.exit_code, result.output) == (1, f"Error: {tmp_path / 'space.yaml'}: "
                                                    f"{message}\n")


def test_grid_refuses_float_ranges(tmp_path):
    result = cli_tune(tmp_path, "--grid")
    assert (result.exit_code, result.output) == (
        1, "Error: optim.lr: --grid needs choice or int entries, got log_uniform (write the "
           "values to try as {choice: [...]})\n")


def test_a_study_made_with_another_space_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_tune(tmp_path, "--trials", "1").exit_code == 0
    result = cli_tune(tmp_path, "--trials", "2", space="optim.lr: {uniform: [0.001, 0.01]}\n")
    url = f"sqlite:///{tmp_path / 'sweep' / 'study.db'}"
    assert (result.exit_code, result.output) == (
        1, f"Error: study 'quickstart' in {url} was created with another space; use another "
           "--study (or --out) for this one\n")
    assert len(load(tmp_path).get_trials()) == 1


def test_baseline_queues_the_base_configs_values_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("--baseline", "--pruner", "none", "--set", "model.hidden=[32, 16]")
    first = cli_tune(tmp_path, "--trials", "2", *args)
    assert first.exit_code == 0, first.output
    trials = sorted(load(tmp_path).get_trials(), key=lambda t: t.number)
    assert trials[0].params == {"optim.lr": 0.001, "model.hidden": "[32, 16]"}
    assert trials[0].user_attrs["baseline"] is True
    assert not trials[1].user_attrs.get("baseline")
    cfg = yaml.safe_load((tmp_path / "sweep" / "trials" / "0000" / "config.yaml").read_text())
    assert (cfg["optim"]["lr"], cfg["model"]["hidden"]) == (0.001, [32, 16])
    board = first.output.splitlines()
    assert any(line.split()[0] == "0" and line.endswith("complete (base)") for line in board)
    again = cli_tune(tmp_path, "--trials", "3", *args)  # the study has its baseline already
    assert again.exit_code == 0, again.output
    assert sum(bool(t.user_attrs.get("baseline")) for t in load(tmp_path).get_trials()) == 1
    assert len(finished(load(tmp_path))) == 3


def test_baseline_outside_the_space_is_one_error_line(tmp_path):
    result = cli_tune(tmp_path, "--baseline")  # quickstart's hidden [256] is not a choice
    assert (result.exit_code, result.output) == (
        1, f"Error: {tmp_path / 'space.yaml'}: model.hidden: --baseline: the base config's "
           "[256] is not one of the choices\n")
    assert not (tmp_path / "sweep").exists()


def test_storage_errors_are_one_line(tmp_path):
    missing = cli_tune(tmp_path, "--storage", "mysql://u@127.0.0.1/db")
    assert missing.exit_code == 1
    assert missing.output.startswith("Error: --storage mysql://u@127.0.0.1/db: the database "
                                     "driver is missing (")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://u:secret@127.0.0.1:{port}/db"
    down = cli_tune(tmp_path, "--storage", url)
    assert down.exit_code == 1 and len(down.output.splitlines()) == 1
    assert down.output.startswith(f"Error: --storage postgresql://u:***@127.0.0.1:{port}/db: "
                                  "cannot open the study storage: ")
    bad = cli_tune(tmp_path, "--storage", "study.db")
    assert bad.output == ("Error: --storage study.db: expected a database URL (sqlite:///PATH, "
                          "postgresql://USER@HOST/DB, mysql://...) or journal:PATH\n")


def test_without_the_tune_extra_one_line_names_it(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    code = ("import sys; sys.modules['optuna'] = None; from nnletters.cli import main; "
            "main()")
    result = subprocess.run(
        [sys.executable, "-c", code, "tune", "--config", str(QUICKSTART), "--space",
         str(tmp_path / "space.yaml")], env=child_env(), capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (
        1, "Error: nnletters tune needs the 'tune' extra: pip install 'nnletters[tune]'\n")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 in a temp folder; -> its URL. As root
    (initdb refuses root) it runs as the user 'nobody'."""
    pg_bin = _pg_bin()
    if pg_bin is None or not (pg_bin / "pg_ctl").exists():
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install "
                    "postgresql; .ci/run does it)")
    user = {"user": "nobody", "group": "nogroup"} if os.geteuid() == 0 else {}
    folder = Path(tempfile.mkdtemp(prefix="nnletters-pg-"))  # /tmp: 'nobody' can reach it
    if user:
        shutil.chown(folder, "nobody", "nogroup")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"

    def pg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              timeout=120, cwd=folder, **user)

    try:
        made = pg(pg_bin / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")
        if made.returncode != 0:
            pytest.skip(f"initdb failed here: {made.stderr.strip().splitlines()[-1:]}")
        started = pg(pg_bin / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-o",
                     f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
                     "start")
        assert started.returncode == 0, (started.stderr, (folder / "log").read_text())
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(Exception):
            pg(pg_bin / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_against_postgresql(tmp_path, postgres):
    args = tune_args(tmp_path, "--trials", "4", "--workers", "2", "--storage", postgres,
                     "--pruner", "none")
    result = run_tune(args)
    assert result.returncode == 0, result.stderr
    trials = finished(load(tmp_path, postgres))
    assert len(trials) == 4 and len({t.user_attrs["folder"] for t in trials}) == 4
    status = run_tune(["tune", "--status", "--storage", postgres, "--study", "quickstart"])
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("study quickstart in postgresql://postgres@127.0.0.1:")
    assert "4 complete" in status.stdout.splitlines()[0]
