"""The benchmark scripts run end to end (tiny sizes; figures are for humans, not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import draw_letter

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


TINY_TRAIN = ("benchmarks/bench_train.py", "--samples", "600", "--hidden", "32", "--epochs", "1",
              "--warmup", "0", "--slices", "2", "--pause", "0.01", "--no-memory", "--json",
              "--keep-blas-env")  # tests never change the machine's BLAS settings


def test_bench_train_runs_each_implementation_in_its_own_processes():
    out = run_script(*TINY_TRAIN, "--impls", "nnletters,textbook", "--rounds", "2",
                     "--alone", "nnletters")
    report = json.loads(out)
    impls = report["implementations"]
    assert set(impls) == {"nnletters", "textbook"}
    for r in impls.values():
        assert len(r["rounds"]["train"]) == len(r["rounds"]["gemm"]) == 2  # one per round
        assert r["train"]["min"] <= r["train_samples_per_s"] <= r["train"]["max"]
        assert r["gemm_ms_per_step"] > 0 and r["ms_per_step"] > 0
    assert len(impls["nnletters"]["rounds"]["alone"]) == 2  # alone in its own process
    assert impls["textbook"]["rounds"]["alone"] == []
    assert impls["nnletters"]["measured_vs_alone"]["n"] == 2
    assert report["ratios"]["train_vs_textbook"]["median"] > 0
    assert report["config"]["isolation"] == "process"


def test_bench_train_in_one_process_pauses_and_still_checks_against_alone():
    out = run_script(*TINY_TRAIN, "--impls", "nnletters,textbook", "--rounds", "2",
                     "--isolation", "pause", "--alone", "textbook")
    report = json.loads(out)
    impls = report["implementations"]
    assert len(impls["nnletters"]["rounds"]["train"]) == 2  # two timed epochs, one per round
    assert len(impls["textbook"]["rounds"]["alone"]) == 2
    assert report["config"]["pause"] == 0.01


def test_bench_train_passes_the_kernel_choice_or_says_why_it_cannot():
    from nnletters.config import load_config
    from nnletters.errors import ConfigError

    result = subprocess.run([sys.executable, *TINY_TRAIN, "--impls", "nnletters",
                             "--rounds", "1", "--alone", "", "--kernels", "numpy"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    try:
        load_config(None, ["data.source=synthetic", "train.kernels=numpy"])
    except ConfigError:  # an nnletters without the setting: one line naming it, exit 1
        assert result.returncode == 1
        assert result.stderr.strip().startswith("error: --kernels numpy: this nnletters")
        return
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["implementations"]["nnletters"]["spec"]["kernels"] == "numpy"


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
                     "--epochs", "2", "--rounds", "2", "--set", "data.synthetic.letters=A-D",
                     "--set", "data.synthetic.per_class=40", "--set", "model.hidden=[32]",
                     "--set", f"data.cache_dir={tmp_path / 'cache'}",
                     "--impls", impls, "--json", "--keep-blas-env")
    report = json.loads(out)
    assert set(report["results"]) == set(impls.split(","))
    for name, r in report["results"].items():
        assert len(r["val_accuracy"]) == len(r["epoch_seconds"]) == 2
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["wall_seconds"] > r["train_seconds"] > 0
        assert len(report["all_runs"][name]) == 2  # one run per round, each its own process
        assert r["spread"]["wall_seconds"]["min"] <= r["wall_seconds"]
        assert r["ms_per_step"] > 0 and r["share_of_gemm"] > 0
    assert len(report["gemm_runs"]) == 2 and report["gemm_ms_per_step"]["median"] > 0
    if "torch" in report["results"]:
        sides = report["results"].values()
        assert len({r["n_train"] for r in sides}) == 1  # the same split on both sides
        assert report["speedup_wall"] > 0
        assert report["speedup_step_rounds"]["n"] == 2  # paired by round


def test_bench_scale_measures_every_phase_at_each_size(tmp_path):
    out = run_script("benchmarks/bench_scale.py", "--sizes", "24,48", "--letters", "3",
                     "--folder", str(tmp_path / "synth"), "--config",
                     "configs/quickstart.yaml", "--set", "model.hidden=[16]", "--json",
                     "--keep-blas-env")
    report = json.loads(out)
    assert report["synth_seconds"] > 0  # the folder was rendered, once, where we said
    assert (tmp_path / "synth" / "C" / "C_00016.png").exists()
    rows = report["rows"]
    assert [r["images"] for r in rows] == [24, 48]
    for r in rows:
        assert r["decode"]["images"] == r["images"] and r["decode"]["x_dtype"] == "float32"
        assert r["load"]["n_train"] + r["load"]["n_val"] + r["load"]["n_test"] == r["images"]
        assert r["train"]["n_train"] == r["load"]["n_train"]
        assert r["train"]["epoch_seconds"] > 0 and r["train"]["peak_rss"] > 0
        assert r["budget"]["total"] > r["budget"]["data"] == r["images"] * (28 * 28 * 4 + 8)
    assert len(report["linearity"]["train_peak"]) == 2


def test_bench_step_times_every_part_of_a_step():
    out = run_script("benchmarks/bench_step.py", "--hidden", "32", "--optimizer", "adamw",
                     "--ema", "0.99", "--dropout", "0.2", "--kernels", "numpy", "--steps", "3",
                     "--rounds", "2", "--pause", "0.01", "--json", "--keep-blas-env")
    report = json.loads(out)
    parts = report["parts"]
    assert list(parts) == ["step", "forward + loss + backward", "optimiser update",
                           "matmul-only"]
    assert all(p["ms"] > 0 and p["min"] <= p["ms"] <= p["max"] for p in parts.values())
    assert parts["step"]["share_of_step"] == 1.0
    assert report["matmul_share"] == parts["matmul-only"]["ms"] / parts["step"]["ms"]



def test_bench_step_times_the_updates_memory_floor_with_the_kernels():
    pytest.importorskip("numba", reason="the memory floor is a numba pass ('fast' extra)")
    out = run_script("benchmarks/bench_step.py", "--hidden", "32", "--optimizer", "momentum",
                     "--ema", "0.99", "--kernels", "numba", "--steps", "3", "--rounds", "2",
                     "--pause", "0.01", "--json", "--keep-blas-env")
    parts = json.loads(out)["parts"]
    # momentum with the average reads gradient, weights, velocity and average; writes three
    assert list(parts) == ["step", "forward + loss + backward", "optimiser update",
                           "update's memory floor (4 read, 3 written)", "matmul-only"]
    assert all(p["ms"] > 0 for p in parts.values())
