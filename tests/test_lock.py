"""One process trains in a run folder at a time: RUN/.lock, held with flock while training.

A real ``python -m nnletters train`` process is stopped (SIGSTOP, through the test hook
$NNLETTERS_TEST_STOP_AT_WRITE in ``nnletters.fileio``) in the middle of a write, a temp file
complete beside its target: it is known to hold the lock, with no timing and no sleeps. A
second train or resume into its folder must then fail at once with one line naming its pid,
leaving every file as it was (a resume would otherwise delete the first one's temp files).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnletters import metrics
from nnletters.cli import main
from nnletters.fileio import CRASH_ENV, STOP_ENV
from tests.test_resume import REPO, tiny_config

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock or SIGSTOP on Windows")


def busy_line(run: Path, pid: int) -> str:
    return (f"Error: {run}: another nnletters process (pid {pid}) is training in this folder; "
            "wait for it or choose another --out\n")


def cli(*args: object):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def snapshot(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` (hidden ones too) -> a digest of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def start_stopped(args: list[str], stop_at: str, cwd: Path) -> subprocess.Popen:
    """``nnletters train ARGS`` in a child process, returned once it has stopped itself during
    its write of ``stop_at`` (NAME:N), holding the run folder's lock."""
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, STOP_ENV)}
    env.update({STOP_ENV: stop_at, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1"})
    proc = subprocess.Popen([sys.executable, "-m", "nnletters", "train", *args, "-q"],
                            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns when it stops (or dies)
    if not os.WIFSTOPPED(status):
        proc.returncode = os.waitstatus_to_exitcode(status)
        raise AssertionError(f"the run ended (exit {proc.returncode}) before stopping at "
                             f"{stop_at}: {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc


def go_on(proc: subprocess.Popen) -> tuple[int, str]:
    """Let a stopped child finish; -> its exit code and stderr."""
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_train_and_resume_into_a_folder_in_training_fail_at_once(letters_folder, tmp_path):
    """The first run is stopped as it writes config.yaml: before any epoch, so a second
    ``train --out`` passes the "already holds a run" check and meets the lock."""
    config, run = tiny_config(tmp_path), tmp_path / "run"
    data = f"data.path={letters_folder}"
    first = start_stopped(["--config", str(config), "--set", data, "--out", str(run)],
                          "config.yaml:1", tmp_path)
    try:
        before = snapshot(run)
        assert ".lock" in before and any(n.startswith(".config.yaml.") for n in before)
        again = cli("--config", config, "--set", data, "--out", run)
        assert (again.exit_code, again.stderr) == (1, busy_line(run, first.pid))
        resumed = cli("--resume", run)
        assert (resumed.exit_code, resumed.stderr) == (1, busy_line(run, first.pid))
        assert snapshot(run) == before
    finally:
        code, err = go_on(first)
    assert code == 0, err
    assert [r["epoch"] for r in metrics.read_history(run)] == [1, 2, 3, 4]
    assert not (run / ".lock").exists()  # a run that ends removes its lock file


def test_resume_into_a_folder_being_resumed_fails_at_once(letters_folder, tmp_path):
    """The first process resumes a 2-epoch run and is stopped mid-write of epoch 3's
    checkpoint; a second resume would have deleted its temp file and trained too."""
    run = tmp_path / "run"
    done = cli("--config", tiny_config(tmp_path), "--set", f"data.path={letters_folder}",
               "--set", "train.epochs=2", "--out", run, "-q")
    assert done.exit_code == 0, done.output
    first = start_stopped(["--resume", str(run), "--set", "train.epochs=4"], "last.npz:1",
                          tmp_path)
    try:
        before = snapshot(run)
        assert any(n.startswith(".last.npz.") for n in before)
        again = cli("--resume", run, "--set", "train.epochs=6")
        assert (again.exit_code, again.stderr) == (1, busy_line(run, first.pid))
        assert snapshot(run) == before
    finally:
        code, err = go_on(first)
    assert code == 0, err
    assert [r["epoch"] for r in metrics.read_history(run)] == [1, 2, 3, 4]
    assert not (run / ".lock").exists()


def test_lock_file_left_by_a_killed_run_blocks_nobody(letters_folder, tmp_path):
    """SIGKILL leaves RUN/.lock behind with the dead process's pid; the kernel dropped its
    flock, so a resume goes ahead (and removes the file when it ends)."""
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, STOP_ENV)}
    env.update({CRASH_ENV: "last.npz:2", "PYTHONPATH": str(REPO)})
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-m", "nnletters", "train", "-q", "--config",
                             str(tiny_config(tmp_path)), "--set", f"data.path={letters_folder}",
                             "--out", str(run)], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (run / ".lock").read_text().strip().isdigit()
    resumed = cli("--resume", run, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in metrics.read_history(run)] == [1, 2, 3, 4]
    assert not (run / ".lock").exists()


def test_lock_held_before_its_pid_is_written(two_epochs_run):
    """The holder has the flock but has not written its pid yet: the line goes without it."""
    import fcntl

    run = two_epochs_run
    with open(run / ".lock", "w") as held:  # another open file: flock treats it as another
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = cli("--resume", run)
    assert (result.exit_code, result.stderr) == (
        1, f"Error: {run}: another nnletters process is training in this folder; wait for it "
           "or choose another --out\n")


@pytest.fixture
def two_epochs_run(letters_folder, tmp_path) -> Path:
    run = tmp_path / "run"
    done = cli("--config", tiny_config(tmp_path), "--set", f"data.path={letters_folder}",
               "--set", "train.epochs=2", "--out", run, "-q")
    assert done.exit_code == 0, done.output
    return run
