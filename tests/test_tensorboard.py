"""TensorBoard logging: the event files read back with TensorBoard's own loader hold exactly
the figures of metrics.jsonl, a resumed run has no step twice, measuring never changes the
weights, and a missing extra is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nnletters
from nnletters import metrics
from nnletters.cli import main
from nnletters.fileio import CRASH_ENV
from nnletters.tensorboard_log import (
    EXTRA_MESSAGE,
    HPARAM_METRICS,
    open_writer,
    require_tensorboard,
    tag,
)
from tests.conftest import write_letters

pytest.importorskip("tensorboardX", reason="the 'tensorboard' extra is not installed")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard package (its event loader) is not installed")

REPO = Path(__file__).resolve().parents[1]
# Dropout and augmentation: both draw from the run's generator, which measuring must not touch.
SETTINGS = ["model.hidden=[16]", "model.dropout=0.2", "optim.name=adam", "optim.lr=0.01",
            "train.epochs=6", "train.batch_size=8", "data.val_fraction=0.25",
            "data.test_fraction=0.25", "train.early_stopping.enabled=false",
            "data.augment.enabled=true", "data.augment.rotate=10", "data.augment.translate=0.1"]


def letters(root: Path) -> Path:
    return write_letters(root)


def config(data: Path, *extra: str):
    return nnletters.load_config(None, [f"data.path={data}", *SETTINGS, *extra])


def accumulator(run: Path):
    acc = event_accumulator.EventAccumulator(
        str(run / "tensorboard"),
        size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, name: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(name)]


def assert_scalars_equal_metrics(run: Path) -> None:
    """Every number of every metrics.jsonl row is the scalar of its tag at step = epoch
    (stored as float32), each step once; the test figures come from summary.json."""
    rows = metrics.read_history(run)
    acc = accumulator(run)
    keys = {k for r in rows for k, v in r.items() if k != "epoch" and v is not None}
    assert set(acc.Tags()["scalars"]) == {tag(k) for k in keys} | {"test/accuracy",
                                                                   "test/loss"}
    for key in keys:
        want = [(r["epoch"], float(np.float32(r[key]))) for r in rows]
        assert scalars(acc, tag(key)) == want, key
    summary = json.loads((run / "summary.json").read_text())
    assert scalars(acc, "test/accuracy") == [
        (summary["epochs_run"], float(np.float32(summary["test_accuracy"])))]


def test_event_files_hold_the_metrics_histograms_inputs_and_hparams(tmp_path):
    run = nnletters.train(config(letters(tmp_path / "letters"), "train.tensorboard=true"),
                          out=tmp_path / "run").path
    assert_scalars_equal_metrics(run)
    rows = metrics.read_history(run)
    assert {"grad_norm/1", "weight_norm/2", "dead/1"} <= set(rows[0])  # diagnostics rows too
    acc = accumulator(run)
    tags = acc.Tags()
    assert set(tags["histograms"]) == {f"{kind}/{i}" for kind in ("weights", "biases",
                                                                  "gradients") for i in (1, 2)}
    assert [h.step for h in acc.Histograms("weights/1")] == [1, 5, 6]
    assert acc.Histograms("gradients/2")[0].histogram_value.num == 16 * 4  # dL/dW of 16x4
    # The inputs as on disk and as augmented: 64 cells of 8 columns, 2x enlarged, 1 px lines.
    assert set(tags["images"]) == {"inputs/original", "inputs/augmented"}
    original, augmented = acc.Images("inputs/original")[0], acc.Images("inputs/augmented")[0]
    assert (original.width, original.height) == (8 * 57 + 1, 3 * 57 + 1)  # 24 training images
    assert augmented.encoded_image_string != original.encoded_image_string
    hparams = acc.PluginTagToContent("hparams")
    assert set(hparams) == {"_hparams_/experiment", "_hparams_/session_start_info",
                            "_hparams_/session_end_info"}
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.01)
    assert start.hparams["model.hidden"].string_value == "[16]"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAM_METRICS)


def test_measuring_and_logging_leave_the_weights_bit_identical(tmp_path):
    data = letters(tmp_path / "letters")
    plain = nnletters.train(config(data, "train.diagnostics=false"), out=tmp_path / "plain")
    watched = nnletters.train(config(data, "train.tensorboard=true"), out=tmp_path / "watched")
    assert "grad_norm/1" not in plain.history[0] and "grad_norm/1" in watched.history[0]
    for name in ("last.npz", "best.npz"):
        with np.load(plain.path / name) as a, np.load(watched.path / name) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                if key != "meta":
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
    strip = [{k: r[k] for k in metrics.COLUMNS if k != "epoch_seconds"} for r in plain.history]
    assert strip == [{k: r[k] for k in metrics.COLUMNS if k != "epoch_seconds"}
                     for r in watched.history]


def test_a_run_killed_and_resumed_has_every_step_once(tmp_path):
    """SIGKILL while the 4th last.npz is being written: epoch 4 was sent to TensorBoard, the
    checkpoint does not hold it. The resumed process purges from epoch 4 on, so the loader
    sees each epoch once, with the figures of the final metrics.jsonl."""
    data = letters(tmp_path / "letters")
    cfg_path = write_config(tmp_path, data)
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    env.update(PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    sets = [arg for item in SETTINGS for arg in ("--set", item)]
    run = tmp_path / "run"

    def train(*args: str, crash: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nnletters", "train", *args],
                              env=dict(env, **({CRASH_ENV: crash} if crash else {})),
                              capture_output=True, text=True, timeout=180)

    killed = train("--config", str(cfg_path), *sets, "--out", str(run), "--tensorboard",
                   "--quiet", crash="last.npz:4")
    assert killed.returncode == -9, killed.stderr
    first = next((run / "tensorboard").glob("events.out.tfevents.*"))
    # Epoch 4 was written before the kill, but tensorboardX's flush() does not wait for its
    # writer thread's queue, so it may or may not have reached the file: either way the
    # resumed process must leave exactly one value per step.
    assert set(steps_in_file(first, "loss/train")) >= {1, 2, 3}
    resumed = train("--resume", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    # The resumed writer marks a purge from epoch 4 on, in a file of its own: tensorboardX
    # names files by second and host and opens them with "wb", so without the process id in
    # the name a resume within the same second truncated the first file (seen in CI: the
    # loader then had only epochs 4-6).
    files = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2 and first in files
    assert [s for f in files for s in session_starts(f)] == [4]
    assert [s for s, _ in scalars(accumulator(run), "loss/train")] == [1, 2, 3, 4, 5, 6]
    assert_scalars_equal_metrics(run)


def test_a_resume_in_the_same_second_keeps_the_first_file(tmp_path, monkeypatch):
    """tensorboardX names event files by second and host and opens them with "wb": a second
    process's writer started within the same second truncated the first run's file. The
    clock is pinned to one second and the process id changed for the second writer."""
    import tensorboardX.event_file_writer as efw

    writer_class = require_tensorboard()
    monkeypatch.setattr(efw.time, "time", lambda: 1_700_000_000.25)
    first = open_writer(writer_class, tmp_path, None)
    first.add_scalar("loss/train", 1.0, 1)
    first.close()
    monkeypatch.setattr(os, "getpid", lambda: 999_999)
    second = open_writer(writer_class, tmp_path, 2)
    second.add_scalar("loss/train", 2.0, 2)
    second.close()
    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 2
    assert sorted(s for f in files for s in steps_in_file(f, "loss/train")) == [1, 2]


def steps_in_file(path: Path, name: str) -> list[int]:
    """Steps of one tag in one event file, read raw (no purging)."""
    return [e.step for e in events(path) for v in e.summary.value if v.tag == name]


def session_starts(path: Path) -> list[int]:
    """Steps of the SessionLog START events in one file: TensorBoard drops every event of
    the run at or after such a step that was written before it."""
    from tensorboard.compat.proto.event_pb2 import SessionLog

    return [e.step for e in events(path)
            if e.HasField("session_log") and e.session_log.status == SessionLog.START]


def events(path: Path) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return list(EventFileLoader(str(path)).Load())


def test_without_the_extra_train_says_which_to_install(tmp_path, monkeypatch):
    data = letters(tmp_path / "letters")
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # what an absent package gives
    result = CliRunner().invoke(main, ["train", "--config", str(write_config(tmp_path, data)),
                                       "--out", str(tmp_path / "run"), "--tensorboard"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"Error: {EXTRA_MESSAGE}"
    assert not (tmp_path / "run").exists()


def write_config(tmp_path: Path, data: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"name: tb\ndata: {{path: '{data}'}}\n")
    return path


def test_the_writer_loads_without_torch_even_where_torch_is_installed():
    code = ("import sys; from nnletters.tensorboard_log import require_tensorboard; "
            "require_tensorboard(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"  # neither loaded nor left blocked
