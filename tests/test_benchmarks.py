"""The benchmark scripts run end to end (tiny sizes; figures are for humans, not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import draw_letter

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_bench_train_runs_and_reports_every_implementation_asked_for():
    out = run_script("benchmarks/bench_train.py", "--samples", "600", "--hidden", "32",
                     "--epochs", "1", "--warmup", "0", "--impls", "nnletters,textbook",
                     "--no-memory", "--json",
                     "--keep-blas-env")  # tests never change the machine's BLAS settings
    report = json.loads(out)
    impls = report["implementations"]
    assert set(impls) == {"nnletters", "textbook"}
    assert all(v["train_samples_per_s"] > 0 for v in impls.values())
    assert report["ratios"]["train_vs_textbook"] > 0


def test_bench_load_runs_on_a_small_folder(tmp_path):
    for letter in "AB":
        (tmp_path / "d" / letter).mkdir(parents=True)
        for i in range(5):
            draw_letter(letter, shift=i % 3).save(tmp_path / "d" / letter / f"{i}.png")
    report = json.loads(run_script("benchmarks/bench_load.py", str(tmp_path / "d"),
                                   "--rounds", "1", "--json"))
    assert report["images"] == 10
    assert report["seconds"]["warm"] > 0 and report["seconds"]["cold"] > 0


def test_bench_e2e_trains_both_sides_on_the_same_setup(tmp_path):
    """nnletters' command and (when torch is importable) the PyTorch setup, tiny."""
    import importlib.util

    impls = "nnletters,torch" if importlib.util.find_spec("torch") else "nnletters"
    out = run_script("benchmarks/bench_e2e.py", "--config", "configs/quickstart.yaml",
                     "--epochs", "2", "--set", "data.synthetic.letters=A-D",
                     "--set", "data.synthetic.per_class=40", "--set", "model.hidden=[32]",
                     "--set", f"data.cache_dir={tmp_path / 'cache'}",
                     "--impls", impls, "--json", "--keep-blas-env")
    report = json.loads(out)
    assert set(report["results"]) == set(impls.split(","))
    for r in report["results"].values():
        assert len(r["val_accuracy"]) == len(r["epoch_seconds"]) == 2
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["wall_seconds"] > r["train_seconds"] > 0
    if "torch" in report["results"]:
        sides = report["results"].values()
        assert len({r["n_train"] for r in sides}) == 1  # the same split on both sides
        assert report["speedup_wall"] > 0
