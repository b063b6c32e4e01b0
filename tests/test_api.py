"""The Python API and the training hooks, driven the way a user's script drives them."""

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

import nnletters
from nnletters.cli import main
from tests.conftest import draw_letter


def tiny_config(path, *extra):
    return nnletters.load_config(None, [
        f"data.path={path}", "model.hidden=[16]", "optim.name=adam", "optim.lr=0.01",
        "train.epochs=4", "train.batch_size=8", "data.val_fraction=0.25",
        "data.test_fraction=0.25", "train.early_stopping.enabled=false", *extra])


def letters(root):
    for letter in "ABCD":
        (root / letter).mkdir(parents=True)
        for i in range(8):
            draw_letter(letter, shift=i % 3 - 1, width=2 + i % 3).save(root / letter / f"{i}.png")
    return root


def tiny_run(tmp_path):
    """A trained run folder (4 letters, 4 epochs), for tests that need one."""
    return nnletters.train(tiny_config(letters(tmp_path / "letters")), out=tmp_path / "run").path


class Recorder(nnletters.Callback):
    """Every hook, in order; adds a key to each row; stops after ``stop_after`` epochs."""

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = [], stop_after

    def on_train_begin(self, trainer):
        super().on_train_begin(trainer)
        self.calls.append("begin")

    def on_epoch_begin(self, epoch):
        self.calls.append(f"epoch {epoch}")

    def on_batch_end(self, n, loss, correct):
        if self.calls[-1] != "batch":
            self.calls.append("batch")

    def on_epoch_end(self, row):
        row["weight_norm"] = float(np.linalg.norm(self.trainer.model.theta))
        self.calls.append(f"end {row['epoch']}")
        if self.stop_after == row["epoch"]:
            self.trainer.request_stop(f"recorder stops after epoch {row['epoch']}")

    def on_epoch_saved(self, row):
        assert (self.trainer.run_dir / "last.npz").exists()
        self.calls.append("saved")

    def on_train_end(self, summary):
        self.calls.append(f"done {summary['epochs_run']}")


def test_train_calls_every_hook_in_order_and_rows_keep_added_keys(tmp_path):
    rec = Recorder()
    run = nnletters.train(tiny_config(letters(tmp_path / "d"), "train.epochs=2"),
                          out=tmp_path / "run", callbacks=[rec])
    assert rec.calls == ["begin", "epoch 1", "batch", "end 1", "saved",
                         "epoch 2", "batch", "end 2", "saved", "done 2"]
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["weight_norm"] for r in rows] == [r["weight_norm"] for r in run.history]
    assert run.summary == json.loads((run.path / "summary.json").read_text())
    assert run.summary["stop_reason"] is None


def test_a_callback_stops_training_and_the_run_records_why(tmp_path):
    run = nnletters.train(tiny_config(letters(tmp_path / "d"), "train.epochs=6"),
                          out=tmp_path / "run", callbacks=[Recorder(stop_after=2)])
    assert run.summary["epochs_run"] == 2 and len(run.history) == 2
    assert run.summary["stop_reason"] == "recorder stops after epoch 2"
    assert run.summary["test_accuracy"] is not None  # the run ended normally
    again = nnletters.resume(run.path)  # finished: nothing changes
    assert again.summary == run.summary


def test_load_model_predict_prepare_and_evaluate_agree_with_the_cli(tmp_path):
    run = tiny_run(tmp_path)
    model = nnletters.load_model(run)
    assert model.classes == ["A", "B", "C", "D"] and model.image_size == 28
    draw_letter("B", size=64, light_on_dark=False, width=6).save(tmp_path / "b.png")
    X = model.prepare([tmp_path / "b.png", Image.open(tmp_path / "b.png")])
    assert X.dtype == np.float32 and X.shape == (2, 28 * 28)
    assert np.array_equal(X[0], X[1])  # a path and the same image give the same vector
    (answer,) = model.predict([tmp_path / "b.png"], top_k=2)
    cli = CliRunner().invoke(main, ["predict", str(tmp_path / "b.png"), "--checkpoint",
                                    str(run), "--json", "--top-k", "2"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output) == [answer]
    result = nnletters.evaluate(model)
    cli_eval = CliRunner().invoke(main, ["eval", str(run), "--json"])
    assert json.loads(cli_eval.output) == result
    assert nnletters.evaluate(run)["accuracy"] == result["accuracy"]
