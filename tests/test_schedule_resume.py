"""Extending a run (``--resume --set train.epochs=N``) never raises the learning rate: the
cosine anneal goes on down from where it ended, the other schedules go on unchanged, and a
resume with the same ``train.epochs`` still follows the same plan bit for bit (issue 13,
item 5: cosine once went from 3.0e-4 back up to 7.8e-4)."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from nnletters import metrics
from nnletters.cli import main
from nnletters.config import ScheduleConfig
from nnletters.nn.schedules import Schedule
from tests.test_resume import Runs, assert_same_run, tiny_config

SCHEDULES = [dict(name="cosine", min_lr=0.01), dict(name="cosine", warmup_epochs=2),
             dict(name="step", step_size=3, gamma=0.5), dict(name="exponential", gamma=0.8)]


def resumed_lrs(kw: dict, planned: int, done: int, epochs: int) -> tuple[list, list, str]:
    """The rates of a run planned for ``planned`` epochs and resumed after ``done`` of them
    with ``epochs`` in all (state passed through state_dict, as a checkpoint does), plus the
    rate one epoch past the end (where cosine reaches min_lr), and the first plan's rates."""
    first = Schedule(ScheduleConfig(**kw), 1.0, planned)
    state = json.loads(json.dumps(first.state_dict()))  # as stored in a checkpoint
    again = Schedule(ScheduleConfig(**kw), 1.0, epochs)
    again.load_state_dict(state)
    note = again.replan(done, epochs)
    plan = [first.lr(e) for e in range(planned)]
    return plan[:done] + [again.lr(e) for e in range(done, epochs + 1)], plan, note


@pytest.mark.parametrize("kw", SCHEDULES, ids=lambda kw: "-".join(map(str, kw.values())))
@pytest.mark.parametrize("planned, done, epochs", [(15, 10, 30), (15, 15, 30), (10, 4, 20),
                                                   (10, 6, 8), (10, 1, 40)])
def test_the_rate_never_goes_up_at_the_resume_point(kw, planned, done, epochs):
    lrs, _, note = resumed_lrs(kw, planned, done, epochs)
    warm = kw.get("warmup_epochs", 0)
    after = lrs[max(done - 1, warm):]  # from the last epoch trained before the resume on
    assert all(b <= a for a, b in zip(after, after[1:], strict=False)), after
    if kw["name"] == "cosine":
        min_lr = kw.get("min_lr", 0.0)
        assert lrs[-1] == pytest.approx(min_lr, abs=1e-12)  # reached one epoch past the end
        if done > warm:  # the anneal goes on: strictly lower, yet still learning
            assert min_lr < lrs[done] < lrs[done - 1]
        assert "cosine" in note and "\n" not in note
    else:
        plain = Schedule(ScheduleConfig(**kw), 1.0, epochs)
        assert lrs == [plain.lr(e) for e in range(epochs + 1)]
        assert "goes on as before" in note


def test_an_unchanged_plan_round_trips_bit_for_bit():
    for kw in SCHEDULES:
        first = Schedule(ScheduleConfig(**kw), 0.3, 12)
        again = Schedule(ScheduleConfig(**kw), 0.3, 12)
        again.load_state_dict(json.loads(json.dumps(first.state_dict())))
        assert [again.lr(e) for e in range(12)] == [first.lr(e) for e in range(12)]


def test_a_second_extension_keeps_going_down():
    lrs, _, _ = resumed_lrs(dict(name="cosine"), 10, 5, 20)
    s = Schedule(ScheduleConfig(name="cosine"), 1.0, 10)
    s.replan(5, 20)
    again = Schedule(ScheduleConfig(name="cosine"), 1.0, 40)
    again.load_state_dict(json.loads(json.dumps(s.state_dict())))
    again.replan(12, 40)
    tail = lrs[:12] + [again.lr(e) for e in range(12, 41)]
    assert all(b <= a for a, b in zip(tail, tail[1:], strict=False))
    assert tail[11] == lrs[11] and tail[-1] == pytest.approx(0.0)


# --------------------------------------------------------------------------- through the CLI


def train(*args: str):
    return CliRunner().invoke(main, ["train", *args])


def test_extending_a_finished_cosine_run_keeps_annealing(letters_folder, tmp_path):
    out = tmp_path / "run"
    first = train("--config", str(tiny_config(tmp_path, epochs=3, schedule="cosine")),
                  "--set", f"data.path={letters_folder}", "--out", str(out), "-q")
    assert first.exit_code == 0, first.output
    more = train("--resume", str(out), "--set", "train.epochs=6")
    assert more.exit_code == 0, more.output
    lrs = [row["lr"] for row in metrics.read_history(out)]
    assert len(lrs) == 6 and all(b <= a for a, b in zip(lrs, lrs[1:], strict=False)), lrs
    note = next(line for line in more.output.splitlines() if "train.epochs 3 -> 6" in line)
    assert note.startswith("resume: train.epochs 3 -> 6: the cosine anneal goes on down from "
                           f"lr {lrs[2]:.2e} (epoch 3, the last trained) to min_lr 0 at epoch 6")
    assert lrs[3] > 0  # an extended finished run still learns


def test_cosine_run_killed_and_resumed_unchanged_is_bit_identical(tmp_path):
    runs = Runs(tmp_path)
    runs.config.write_text(runs.config.read_text().replace(
        "{name: plateau, patience: 0, factor: 0.5}", "{name: cosine, min_lr: 0.001}"))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert runs.train(straight).returncode == 0
    assert runs.train(killed, crash_at="last.npz:3").returncode == -signal.SIGKILL
    resumed = runs.resume(killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "train.epochs" not in resumed.stdout  # same plan: nothing replanned
    assert_same_run(killed, straight)
    lrs = [row["lr"] for row in metrics.read_history(killed)]
    assert np.all(np.diff(lrs) < 0)
