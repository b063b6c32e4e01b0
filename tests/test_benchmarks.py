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
