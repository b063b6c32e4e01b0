"""Never lose a run: exact resume after SIGKILL, Ctrl-C/SIGTERM, divergence, --resume errors.

The SIGKILL tests run real ``nnletters train`` processes. Most crash points are reached
deterministically through the test hook in ``nnletters.fileio``
($NNLETTERS_TEST_CRASH_AT_WRITE=NAME:N kills the process with SIGKILL during its N-th write of
NAME, after the temp file is complete and before it replaces NAME); one is a plain SIGKILL
sent from outside as soon as an epoch line appears, landing wherever the run happens to be.
Every resumed run must end with arrays bit-identical to the run that was never stopped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nnletters import metrics
from nnletters.checkpoint import load_checkpoint
from nnletters.cli import main
from nnletters.fileio import CRASH_ENV
from tests.conftest import draw_letter

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/")

# Dropout, Adam, a plateau schedule and early stopping: every kind of state a resume must
# restore (weights, optimiser moments and step, lr scale, patience, best weights, generator).
# Uninterrupted, this run peaks at epoch 2, decays its lr from epoch 4 on and stops early
# after epoch 6.
CONFIG = """\
name: resume
data: {{path: '{data}', val_fraction: 0.25, test_fraction: 0.25}}
model: {{hidden: [16], dropout: 0.2}}
optim: {{name: adam, lr: 0.02}}
schedule: {{name: plateau, patience: 0, factor: 0.5}}
train: {{epochs: 7, batch_size: 8, early_stopping: {{monitor: val_accuracy, patience: 4}}}}
"""


def make_letters(root: Path, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for letter in "ABCD":
        (root / letter).mkdir(parents=True)
        for i in range(per_class):
            img = draw_letter(letter, shift=int(rng.integers(-2, 3)), width=int(2 + i % 3))
            img.save(root / letter / f"{letter}{i:02d}.png")
    return root


class Runs:
    """Real ``python -m nnletters`` processes on one tiny dataset, with the same thread count
    and cache for all of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.yaml"
        self.config.write_text(CONFIG.format(data=make_letters(root / "letters")))
        self.env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        self.env.update(PYTHONUNBUFFERED="1", NNLETTERS_CACHE_DIR=str(root / "cache"),
                        OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                        PYTHONPATH=str(REPO))

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "nnletters", "train", *args]

    def run(self, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env, **({CRASH_ENV: crash_at} if crash_at else {}))
        return subprocess.run(self.command(*args), env=env, cwd=self.root, capture_output=True,
                              text=True, timeout=120)

    def train(self, out: Path, *extra: str, crash_at: str | None = None):
        return self.run("--config", str(self.config), "--out", str(out), *extra,
                        crash_at=crash_at)

    def resume(self, out: Path, *extra: str, crash_at: str | None = None):
        return self.run("--resume", str(out), *extra, crash_at=crash_at)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("resume"))


@pytest.fixture(scope="module")
def reference(runs) -> Path:
    """The same run, never stopped."""
    out = runs.root / "reference"
    done = runs.train(out)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    # The states the kill points below land in (a change of the numerics may move these).
    assert (summary["epochs_run"], summary["best_epoch"], summary["stopped_early"]) == \
        (6, 2, True)
    return out


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "meta"}


def assert_same_run(run: Path, reference: Path) -> None:
    """Bit-identical arrays in last.npz and best.npz, the same training state in their
    metadata, and the same metrics rows (wall times aside)."""
    for name in ("last.npz", "best.npz"):
        got, want = arrays(run / name), arrays(reference / name)
        assert sorted(got) == sorted(want), name
        for key in want:
            assert got[key].dtype == want[key].dtype
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}:{key}")
        got_meta = load_checkpoint(run / name).meta
        want_meta = load_checkpoint(reference / name).meta
        for key in ("epoch", "best_epoch", "best_metric", "bad_epochs", "stopped_early",
                    "rng_state", "schedule"):
            assert got_meta[key] == want_meta[key], (name, key)

    def rows(folder: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "epoch_seconds"}
                for r in metrics.read_history(folder)]

    assert rows(run) == rows(reference)
    assert len((run / "metrics.csv").read_text().splitlines()) == len(rows(reference)) + 1
    summary = json.loads((run / "summary.json").read_text())
    want = json.loads((reference / "summary.json").read_text())
    for key in ("epochs_run", "best_epoch", "best_metric", "test_accuracy", "test_loss"):
        assert summary[key] == want[key], key
    assert not list(run.glob(".*.tmp")), "temp files left behind"


def saved_epoch(run: Path) -> int:
    return load_checkpoint(run / "last.npz").meta["epoch"]


# --------------------------------------------------------------------------- SIGKILL


@pytest.mark.parametrize("crash_at, epoch_on_disk", [
    ("best.npz:1", 1),       # last.npz of epoch 1 written, best.npz not there yet
    ("last.npz:3", 2),       # in the middle of writing epoch 3's checkpoint
    ("metrics.jsonl:4", 3),  # writing epoch 4's metrics, after the lr decay began
    ("last.npz:5", 4),       # epoch 5's checkpoint; the best weights are epoch 2's best.npz
])
def test_sigkill_mid_write_then_resume_is_bit_identical(runs, reference, crash_at,
                                                        epoch_on_disk):
    out = runs.root / f"kill-{crash_at.replace(':', '-')}"
    killed = runs.train(out, crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert saved_epoch(out) == epoch_on_disk
    assert list(out.glob(".*.tmp")), "the hook fires after the temp file is complete"
    resumed = runs.resume(out)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume: continuing after epoch {epoch_on_disk} of 7" in resumed.stdout
    assert_same_run(out, reference)


def test_sigkill_twice_then_resume_is_bit_identical(runs, reference):
    out = runs.root / "kill-twice"
    assert runs.train(out, crash_at="last.npz:2").returncode == -signal.SIGKILL
    # The resumed process dies too, in its own second write of last.npz (epoch 3's).
    assert runs.resume(out, crash_at="last.npz:2").returncode == -signal.SIGKILL
    assert saved_epoch(out) == 2
    assert runs.resume(out).returncode == 0
    assert_same_run(out, reference)


def test_sigkill_from_outside_at_an_arbitrary_moment(runs, reference):
    """SIGKILL as soon as epoch 3 is reported: the process is somewhere in epoch 4 (or in
    its writes, or even done); wherever it was, the resumed run ends the same."""
    out = runs.root / "kill-outside"
    proc = subprocess.Popen(runs.command("--config", str(runs.config), "--out", str(out)),
                            env=runs.env, cwd=runs.root, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if (m := EPOCH_LINE.match(line)) and int(m.group(1)) == 3:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()  # type: ignore[union-attr]
    assert saved_epoch(out) >= 3
    resumed = runs.resume(out)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


# --------------------------------------------------------------------------- SIGINT / SIGTERM


def test_sigint_keeps_the_last_epoch_exits_130_and_resumes(runs):
    out = runs.root / "sigint"
    proc = subprocess.Popen(runs.command("--config", str(runs.config), "--out", str(out),
                                         "--set", "train.epochs=100000",
                                         "--set", "train.early_stopping.enabled=false"),
                            env=runs.env, cwd=runs.root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # type: ignore[union-attr]
        if (m := EPOCH_LINE.match(line)) and int(m.group(1)) == 2:
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    epoch = saved_epoch(out)
    assert epoch >= 2
    assert err == (f"Interrupted in epoch {epoch + 1}; epoch {epoch} is saved; "
                   f"resume with: nnletters train --resume {out}\n")
    assert [r["epoch"] for r in metrics.read_history(out)] == list(range(1, epoch + 1))
    assert not list(out.glob(".*.tmp"))
    # Resuming with fewer epochs than asked for at first ends the run there, appending rows.
    resumed = runs.resume(out, "--set", f"train.epochs={epoch + 2}", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in metrics.read_history(out)] == list(range(1, epoch + 3))


def test_sigterm_in_process_exits_143_between_steps(letters_folder, tmp_path, monkeypatch):
    """SIGTERM delivered while epoch 2 is being reported: epoch 2 is complete on disk, epoch 3
    starts, and training stops before its first step."""
    real = metrics.format_epoch

    def report_and_signal(row, epochs, is_best):
        if row["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(row, epochs, is_best)

    monkeypatch.setattr(metrics, "format_epoch", report_and_signal)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--set", f"data.path={letters_folder}",
                                       "--config", str(tiny_config(tmp_path)),
                                       "--out", str(out)])
    assert result.exit_code == 143, result.output
    assert result.stderr == ("Interrupted in epoch 3; epoch 2 is saved; resume with: "
                             f"nnletters train --resume {out}\n")
    assert saved_epoch(out) == 2 and len(metrics.read_history(out)) == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back


# --------------------------------------------------------------------------- in process


def tiny_config(tmp_path: Path, epochs: int = 4, schedule: str = "constant") -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("data: {path: unset, val_fraction: 0.25, test_fraction: 0.25}\n"
                    "model: {hidden: [16], dropout: 0.1}\noptim: {name: momentum, lr: 0.05}\n"
                    f"schedule: {{name: {schedule}}}\n"
                    f"train: {{epochs: {epochs}, batch_size: 8, "
                    "early_stopping: {enabled: false}}\n")
    return path


def cli(*args: str):
    return CliRunner().invoke(main, ["train", *args])


@pytest.fixture
def two_epochs(letters_folder, tmp_path) -> Path:
    out = tmp_path / "run"
    done = cli("--config", str(tiny_config(tmp_path)), "--set", f"data.path={letters_folder}",
               "--set", "train.epochs=2", "--out", str(out), "-q")
    assert done.exit_code == 0, done.output
    return out


def test_resume_with_more_epochs_extends_the_run_exactly(two_epochs, letters_folder, tmp_path):
    extended = cli("--resume", str(two_epochs), "--set", "train.epochs=4")
    assert extended.exit_code == 0, extended.output
    assert "resume: continuing after epoch 2 of 4" in extended.output
    straight = tmp_path / "straight"
    done = cli("--config", str(tiny_config(tmp_path)), "--set", f"data.path={letters_folder}",
               "--out", str(straight), "-q")
    assert done.exit_code == 0, done.output
    assert_same_run(two_epochs, straight)
    assert "epochs: 4" in (two_epochs / "config.yaml").read_text()  # the next resume knows


@pytest.mark.parametrize("lose_best", [False, True])
def test_resume_is_exact_with_ema_batch_norm_and_augmentation(letters_folder, tmp_path,
                                                              lose_best):
    """Every other piece of state: the weight average, batch-norm statistics, augmentation
    drawing from the run's generator. ``lose_best``: best.npz lost between the last two writes
    of the epoch (as a SIGKILL there leaves it) is rebuilt, EMA weights and all."""
    extra = ["--set", f"data.path={letters_folder}", "--set", "model.batch_norm=true",
             "--set", "optim.ema=0.9", "--set", "train.early_stopping.monitor=val_loss",
             "--set", "data.augment={enabled: true, translate: 0.1, rotate: 10}", "-q"]
    config = str(tiny_config(tmp_path, epochs=4))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert cli("--config", config, "--out", str(straight), *extra).exit_code == 0
    first = cli("--config", config, "--out", str(resumed), "--set", "train.epochs=2", *extra)
    assert first.exit_code == 0, first.output
    if lose_best:
        assert load_checkpoint(resumed / "last.npz").meta["best_epoch"] == 2
        (resumed / "best.npz").unlink()
    result = cli("--resume", str(resumed), "--set", "train.epochs=4", "-q")
    assert result.exit_code == 0, result.output
    assert_same_run(resumed, straight)
    assert any(k.startswith("ema/") for k in arrays(resumed / "last.npz"))


def folder_bytes(run: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a run folder: its bytes and modification time (ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.iterdir())
            if p.is_file()}


@pytest.mark.parametrize("quiet", [False, True])
def test_resume_of_a_finished_run_changes_nothing(two_epochs, quiet):
    """Issue 13 item 4: once rewrote summary.json (train_seconds 0.0, another test
    accuracy). Now one line, and not one byte of the folder written."""
    before = folder_bytes(two_epochs)
    summary = json.loads(before["summary.json"][0])
    again = cli("--resume", str(two_epochs), *(["-q"] if quiet else []))
    assert again.exit_code == 0, again.output
    assert folder_bytes(two_epochs) == before  # summary.json, checkpoints, metrics, data.json
    if quiet:
        assert again.output == (f"test accuracy {100 * summary['test_accuracy']:.2f}%  "
                                f"run folder {two_epochs}\n")
    else:
        assert again.output == ("resume: the run already finished at epoch 2; nothing changed "
                                "(to train on, raise train.epochs: --set train.epochs=12)\n")
    assert summary["train_seconds"] > 0
    evaluated = CliRunner().invoke(main, ["eval", str(two_epochs), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["accuracy"] == summary["test_accuracy"]


def test_resume_of_a_run_that_stopped_early_changes_nothing(letters_folder, tmp_path):
    out = tmp_path / "early"
    done = cli("--config", str(tiny_config(tmp_path, epochs=30)), "--set",
               f"data.path={letters_folder}", "--set", "train.early_stopping.patience=1",
               "--set", "train.early_stopping.enabled=true",
               "--out", str(out), "-q")
    assert done.exit_code == 0, done.output
    meta = load_checkpoint(out / "last.npz").meta
    assert meta["stopped_early"] and meta["epoch"] < 30
    before = folder_bytes(out)
    again = cli("--resume", str(out))
    assert again.exit_code == 0, again.output
    assert again.output.startswith(f"resume: the run already finished at epoch {meta['epoch']};")
    assert again.output.count("\n") == 1 and folder_bytes(out) == before


def test_resume_refuses_a_different_architecture(two_epochs, tmp_path):
    result = cli("--resume", str(two_epochs), "--set", "model.hidden=[32]")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {two_epochs}: model.hidden is [32] but the run was trained "
                             "with [16]; a resume keeps the architecture and optimiser (start "
                             "a new run to change them)\n")
    other = tmp_path / "other.yaml"
    other.write_text((two_epochs / "config.yaml").read_text().replace("activation: relu",
                                                                       "activation: tanh"))
    result = cli("--resume", str(two_epochs), "--config", str(other))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {two_epochs}: model.activation is 'tanh' but the "
                                    "run was trained with 'relu'")
    result = cli("--resume", str(two_epochs), "--set", "optim.name=adam")
    assert result.stderr.startswith(f"Error: {two_epochs}: optim.name is 'adam'")


def test_resume_refuses_fewer_epochs_than_done(two_epochs):
    result = cli("--resume", str(two_epochs), "--set", "train.epochs=1")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {two_epochs}: train.epochs is 1 but the run already "
                             "completed 2 epochs\n")


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text("data: {path: x}\n")
    result = cli("--resume", str(empty))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {empty}: no checkpoint to resume from (last.npz is "
                             "missing: no epoch of this run was completed)\n")
    result = cli("--resume", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'nowhere'}: no such run folder to resume\n"


def test_resume_usage_errors(two_epochs, tmp_path):
    both = cli("--resume", str(two_epochs), "--out", str(tmp_path / "x"))
    assert both.exit_code == 2 and "--resume continues the run in its own folder" in both.stderr
    neither = cli("--set", "train.epochs=3")
    assert neither.exit_code == 2 and "Missing option '--config' (or '--resume RUN_DIR')" \
        in neither.stderr


def test_resume_repairs_a_best_checkpoint_that_lags(two_epochs):
    """A crash between writing last.npz and best.npz leaves best.npz one best behind; when
    last.npz itself holds the best weights, resume rewrites best.npz from it."""
    ckpt = load_checkpoint(two_epochs / "last.npz")
    assert ckpt.meta["best_epoch"] == 2  # the tiny run improves every epoch
    (two_epochs / "best.npz").unlink()
    result = cli("--resume", str(two_epochs), "--set", "train.epochs=3")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(two_epochs / "best.npz").meta["epoch"] in (2, 3)


# --------------------------------------------------------------------------- divergence


def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(letters_folder, tmp_path):
    """Two good epochs, then lr 1e6 with momentum: the weights overflow within an epoch; the
    run stops with one line naming epoch and step, the checkpoint of epoch 2 stays, exit 1."""
    run = tmp_path / "run"
    good = cli("--config", str(tiny_config(tmp_path)), "--set", f"data.path={letters_folder}",
               "--set", "model.hidden=[64, 32]", "--set", "train.epochs=2", "--out", str(run))
    assert good.exit_code == 0, good.output
    result = cli("--resume", str(run), "--set", "train.epochs=6", "--set", "optim.lr=1e6")
    assert result.exit_code == 1, result.output
    match = re.fullmatch(r"Error: (loss|val_loss|train_loss) became (nan|inf|-inf|[0-9.e+]+) "
                         r"at epoch (\d+)(, step \d+)?: training diverged; "
                         r"try a smaller learning rate \(optim.lr=1e\+06 now\); "
                         r"last.npz keeps epoch (\d+)\n", result.stderr)
    assert match, result.stderr
    epoch, kept = int(match.group(3)), int(match.group(5))
    assert kept == epoch - 1 == saved_epoch(run) >= 2
    assert np.isfinite(load_checkpoint(run / "last.npz").model_state["0/W"]).all()
    assert [r["epoch"] for r in metrics.read_history(run)] == list(range(1, kept + 1))
    assert not list(run.glob(".*.tmp"))
    assert "Traceback" not in result.output and "Warning" not in result.stderr
