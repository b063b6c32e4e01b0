"""A short form of the README's main job: configs/quickstart.yaml on rendered letters."""

from pathlib import Path

from click.testing import CliRunner

from nnletters.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def test_quickstart_short_form_trains_and_predicts(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--config", str(CONFIG), "--out", str(out), "--quiet",
                                  "--set", "data.synthetic.per_class=40",
                                  "--set", "data.synthetic.letters=A-J",
                                  "--set", "train.epochs=8", "--set", "optim.lr=0.003"])
    assert result.exit_code == 0, result.output
    accuracy = float(result.output.split()[2].rstrip("%"))
    assert accuracy > 50.0  # 10 classes: chance is 10%
    assert (out / "fonts.txt").read_text().strip()  # the fonts used are listed
    samples = Path(__file__).resolve().parents[1] / "data" / "samples"
    predicted = runner.invoke(main, ["predict", str(samples), "--checkpoint", str(out)])
    assert predicted.exit_code == 0, predicted.output
    first, *lines = predicted.output.splitlines()
    assert first == f"checkpoint {out / 'best.npz'}"
    assert len(lines) == len(list(samples.glob("*.png")))
