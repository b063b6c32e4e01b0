"""Training end to end on tiny data: run folder, reproducibility, checkpoints, eval, predict."""

import json

import numpy as np
import pytest

from nnletters.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from nnletters.config import load_config
from nnletters.errors import CheckpointError
from nnletters.evaluation import evaluate_checkpoint
from nnletters.nn.model import MLP
from nnletters.prediction import predict_images
from nnletters.run_folder import new_run_dir, train_run
from tests.conftest import draw_letter


def tiny_config(path, *extra):
    return load_config(None, [f"data.path={path}", "model.hidden=[32]", "optim.name=adam",
                              "optim.lr=0.01", "train.epochs=3", "train.batch_size=8",
                              "data.val_fraction=0.25", "data.test_fraction=0.25", *extra])


def train(cfg, out):
    return train_run(cfg, new_run_dir(cfg, out), log=lambda _m: None).summary


def test_run_folder_holds_every_file(letters_folder, tmp_path):
    summary = train(tiny_config(letters_folder), tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "last.npz", "best.npz",
                 "summary.json"):
        assert (run / name).exists(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_accuracy", "val_loss",
                            "val_accuracy", "epoch_seconds", "grad_norm/1", "weight_norm/1",
                            "dead/1", "grad_norm/2", "weight_norm/2"}  # + diagnostics
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,lr,train_loss")
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["n_train"] + summary["n_val"] + summary["n_test"] == 48
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    with np.load(run / "best.npz", allow_pickle=False) as npz:
        assert "model/0/W" in npz.files and npz["model/0/W"].dtype == np.float32
        # the optimiser's state is for resuming, from last.npz; best.npz is what eval ships
        assert not [k for k in npz.files if k.startswith("optim/")]
    with np.load(run / "last.npz", allow_pickle=False) as npz:
        assert "optim/m" in npz.files


def test_seeded_runs_reproduce_the_same_weights(letters_folder, tmp_path):
    cfg = tiny_config(letters_folder, "model.dropout=0.2")
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    a, b = load_checkpoint(tmp_path / "a/last.npz"), load_checkpoint(tmp_path / "b/last.npz")
    for key in a.model_state:
        np.testing.assert_array_equal(a.model_state[key], b.model_state[key])
    other = tiny_config(letters_folder, "model.dropout=0.2", "seed=1")
    train(other, tmp_path / "c")
    c = load_checkpoint(tmp_path / "c/last.npz")
    assert not np.array_equal(a.model_state["0/W"], c.model_state["0/W"])


def test_learns_the_tiny_letters(letters_folder, tmp_path):
    summary = train(tiny_config(letters_folder, "train.epochs=15"), tmp_path / "run")
    assert summary["test_accuracy"] >= 0.9


def test_refuses_to_overwrite_a_run(letters_folder, tmp_path):
    cfg = tiny_config(letters_folder, "train.epochs=1")
    train(cfg, tmp_path / "run")
    with pytest.raises(Exception, match="already holds a run"):
        new_run_dir(cfg, tmp_path / "run")


def test_checkpoint_round_trip(tmp_path):
    model = MLP([6, 5, 3], "tanh", "xavier", 0.0, "cross_entropy", np.random.default_rng(0))
    meta = {"classes": ["a", "b", "c"], "image_size": 2, "layer_sizes": [6, 5, 3],
            "activation": "tanh", "loss": "cross_entropy"}
    save_checkpoint(tmp_path / "m.npz", model, meta)
    ckpt = load_checkpoint(tmp_path / "m.npz")
    again = model_from_checkpoint(ckpt)
    np.testing.assert_array_equal(again.theta, model.theta)
    x = np.random.default_rng(1).random((4, 6), dtype=np.float32)
    np.testing.assert_array_equal(again.predict_proba(x), model.predict_proba(x))
    assert ckpt.classes == ["a", "b", "c"] and ckpt.meta["format_version"] == 1
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_checkpoints_hold_what_np_savez_writes_byte_for_byte(tmp_path):
    """write_npz reads the arrays' own memory; each member is np.savez's .npy, to the byte."""
    import io
    import zipfile

    from nnletters.checkpoint import write_npz

    arrays = {"model/0/W": np.random.default_rng(0).random((30, 7), dtype=np.float32),
              "optim/t": np.array(12, np.int64), "meta": np.array('{"classes": ["\u00e9"]}'),
              "empty": np.zeros((0, 3), np.float32), "view": np.arange(40.0)[10:30:2]}
    ours, theirs = io.BytesIO(), io.BytesIO()
    write_npz(ours, arrays)
    np.savez(theirs, **arrays)
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(theirs) as b:
        assert a.namelist() == b.namelist()
        assert all(a.read(name) == b.read(name) for name in a.namelist())
    ours.seek(0)
    with np.load(ours, allow_pickle=False) as npz:
        assert all(np.array_equal(npz[k], v) and npz[k].shape == v.shape
                   for k, v in arrays.items())


def test_checkpoint_shape_mismatch_is_refused(tmp_path):
    model = MLP([6, 5, 3], "relu", "he", 0.0, "cross_entropy", np.random.default_rng(0))
    meta = {"classes": ["a", "b", "c"], "image_size": 2, "layer_sizes": [6, 4, 3],
            "activation": "relu", "loss": "cross_entropy"}
    save_checkpoint(tmp_path / "m.npz", model, meta)
    with pytest.raises(CheckpointError, match="disagree with layer sizes"):
        load_checkpoint(tmp_path / "m.npz")


def test_eval_and_predict_from_a_run(letters_folder, tmp_path):
    train(tiny_config(letters_folder, "train.epochs=15"), tmp_path / "run")
    result = evaluate_checkpoint(tmp_path / "run")
    assert result["n"] == 12 and result["classes"] == ["A", "B", "C", "D"]
    assert np.array(result["confusion"]).sum() == 12
    assert sum(s["support"] for s in result["per_class"].values()) == 12
    whole = evaluate_checkpoint(tmp_path / "run", data_path=letters_folder)
    assert whole["n"] == 48
    # A user's drawing: dark letter on a light background, bigger, with a margin.
    big = draw_letter("C", size=80, light_on_dark=False, width=8)
    big.save(tmp_path / "mine.png")
    results, errors = predict_images([tmp_path / "mine.png"], tmp_path / "run", top_k=2)
    assert errors == []
    assert results[0]["label"] == "C"
    assert len(results[0]["top_k"]) == 2
    assert results[0]["top_k"][0] == ["C", results[0]["probability"]]
