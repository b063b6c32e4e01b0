"""One image preparation for eval --data, report --data and predict (issue 13, items 1-2):
images in the training format pass untouched, others are inverted and framed, and all three
commands give the same answer for the same files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nnletters.cli import main
from nnletters.config import load_config
from nnletters.data import load_splits
from nnletters.data.images import MAX_PIXELS, read_gray, resize_gray
from nnletters.data.preparation import (
    FRAMED,
    INVERTED,
    NO_GLYPH,
    SET_MIN,
    Look,
    SetView,
    evidence,
    judge_set,
    prepare_pixels,
)
from nnletters.evaluation import confusion_matrix
from nnletters.prediction import load_model
from nnletters.report import load_results
from tests.conftest import draw_letter

LETTERS = "ABCD"


def train_cli(out: Path, *settings: str) -> Path:
    """``nnletters train`` with a config of ``settings`` (key=value) into ``out``."""
    config = out.parent / f"{out.name}.yaml"
    config.write_text("name: prep\n")
    args = ["train", "--config", str(config), "--out", str(out), "--quiet"]
    for setting in settings:
        args += ["--set", setting]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny model trained on light letters on black (tests/conftest.py's draw_letter)."""
    root = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(0)
    for letter in LETTERS:
        (root / "letters" / letter).mkdir(parents=True)
        for i in range(12):
            img = draw_letter(letter, shift=int(rng.integers(-2, 3)), width=int(2 + i % 3))
            img.save(root / "letters" / letter / f"{letter}{i:02d}.png")
    return train_cli(root / "run", f"data.path={root / 'letters'}", "model.hidden=[32]",
                     "optim.name=adam", "optim.lr=0.01", "train.epochs=12",
                     "train.batch_size=8", "data.val_fraction=0.25", "data.test_fraction=0.25",
                     "data.cache=false")


def dark_on_light(folder: Path, per_class: int = 6) -> Path:
    """The other polarity: dark letters on white, in class folders."""
    for letter in LETTERS:
        (folder / letter).mkdir(parents=True)
        for i in range(per_class):
            img = draw_letter(letter, shift=i % 3 - 1, light_on_dark=False, width=2 + i % 3)
            img.save(folder / letter / f"{i}.png")
    return folder


def predicted_labels(stdout: str, root: Path) -> dict[str, str]:
    """predict --json -> {path relative to root: label}."""
    return {str(Path(r["path"]).relative_to(root)): r["label"] for r in json.loads(stdout)}


def test_other_polarity_gets_the_same_good_answer_from_eval_report_and_predict(run, tmp_path):
    data = dark_on_light(tmp_path / "dark")
    runner = CliRunner()
    ev = runner.invoke(main, ["eval", str(run), "--data", str(data), "--json"])
    assert ev.exit_code == 0, ev.output
    assert ev.stderr == (f"Warning: {data}: 24 of 24 images are dark on light, unlike the "
                         "model's training images (light on dark): inverted\n")
    evaluation = json.loads(ev.stdout)
    assert evaluation["n"] == 24 and evaluation["accuracy"] >= 0.9

    pred = runner.invoke(main, ["predict", str(data), "--checkpoint", str(run), "--json"])
    assert pred.exit_code == 0, pred.output
    labels = predicted_labels(pred.stdout, data)
    y_true = np.array([LETTERS.index(p[0]) for p in sorted(labels)])
    y_pred = np.array([LETTERS.index(labels[p]) for p in sorted(labels)])
    assert confusion_matrix(y_true, y_pred, 4).tolist() == evaluation["confusion"]

    with pytest.warns(UserWarning, match="24 of 24 images are dark on light"):
        results = load_results(run, data)  # what report --data draws and tabulates
    assert results.evaluation["confusion"] == evaluation["confusion"]
    model = load_model(run)
    X = model.prepare([data / p for p in results.paths])
    assert np.array_equal(X, results.X)  # the very vectors, not just the same answers
    report = runner.invoke(main, ["report", str(run), "--data", str(data),
                                  "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert "inverted" in report.stderr and (tmp_path / "report" / "report.html").exists()


def test_training_format_passes_through_untouched(run):
    """The run's own test images, as files: predict feeds the network exactly eval's arrays."""
    cfg = load_config(run / "config.yaml")
    test = load_splits(cfg.data, cfg.seed).test
    model = load_model(run)
    files = [Path(cfg.data.path) / p for p in test.paths]
    assert np.array_equal(model.prepare(files), test.X)
    assert np.array_equal(model.prepare(files[:1]), test.X[:1])  # alone, too


def test_a_split_list_given_to_data_means_exactly_its_lines(run, tmp_path):
    root = tmp_path / "lists"
    names = {}
    for split, count in (("train", 5), ("validate", 2), ("test", 3)):
        lines = []
        for i in range(count):
            letter = LETTERS[i % 4]
            name = f"images/{split}{i}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            draw_letter(letter, shift=i % 3 - 1).save(root / name)
            lines.append(f"{name} {letter}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        names[split] = count
    runner = CliRunner()
    for split, count in names.items():
        result = runner.invoke(main, ["eval", str(run), "--data", str(root / f"{split}.txt"),
                                      "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["n"] == count
    assert len(load_results(run, root / "test.txt").paths) == 3


def test_eval_on_a_class_subset_leaves_absent_classes_out(run, tmp_path):
    data = tmp_path / "ab"
    for letter in "AB":
        (data / letter).mkdir(parents=True)
        for i in range(3):
            draw_letter(letter, shift=i - 1).save(data / letter / f"{i}.png")
    result = CliRunner().invoke(main, ["eval", str(run), "--data", str(data)])
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.stdout.splitlines()[4:] if line.strip()]
    assert rows[:2] == ["A", "B"] and "C" not in rows[:4] and "D" not in rows[:4]
    assert [line for line in result.stdout.splitlines() if line.startswith("not in the data")
            ][0].startswith("not in the data: C D (predicted ")
    as_json = json.loads(CliRunner().invoke(main, ["eval", str(run), "--data", str(data),
                                                   "--json"]).stdout)
    assert as_json["per_class"]["C"]["absent"] is True
    assert "absent" not in as_json["per_class"]["A"]


def test_predict_names_its_checkpoint_and_finds_no_glyph_in_a_blank_image(run, tmp_path):
    draw_letter("B").save(tmp_path / "b.png")
    Image.new("L", (40, 30), 200).save(tmp_path / "blank.png")
    runner = CliRunner()
    text = runner.invoke(main, ["predict", str(tmp_path / "b.png"), str(tmp_path / "blank.png"),
                                "--checkpoint", str(run)])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == f"checkpoint {run / 'best.npz'}"
    assert lines[1].startswith(f"{tmp_path / 'b.png'}: B (")
    assert lines[2].startswith(f"{tmp_path / 'blank.png'}: no glyph found (the model's forced "
                               "guess: ")
    answers = json.loads(runner.invoke(main, ["predict", str(tmp_path / "b.png"),
                                              str(tmp_path / "blank.png"), "--checkpoint",
                                              str(run), "--json"]).stdout)
    assert [a["checkpoint"] for a in answers] == [str(run / "best.npz")] * 2
    assert "warning" not in answers[0] and answers[1]["warning"] == "no glyph found"


def glyph(letter: str, light_on_dark: bool = True, size: int = 28) -> np.ndarray:
    return np.asarray(draw_letter(letter, size=size, light_on_dark=light_on_dark))


MARGIN = Look(28, light_on_dark=True, glyph_fill=0.75)   # letters with a margin, like ours
FILLING = Look(28, light_on_dark=True, glyph_fill=1.0)   # glyphs filling the frame: notMNIST


def test_an_image_in_the_training_format_is_left_exactly_as_the_loader_reads_it():
    for look in (MARGIN, Look(28, light_on_dark=False, glyph_fill=0.75)):
        img = glyph("A", light_on_dark=look.light_on_dark)
        pixels, done = prepare_pixels(img, look)
        assert done == () and np.array_equal(pixels, img.reshape(-1))


def test_a_data_set_image_of_the_other_polarity_is_inverted_not_reframed():
    img = glyph("B", light_on_dark=False)
    pixels, done = prepare_pixels(img, MARGIN)
    assert done == (INVERTED,) and np.array_equal(pixels, 255 - img.reshape(-1))


def test_a_lone_image_of_a_frame_filling_model_keeps_its_polarity_a_set_is_judged():
    """notMNIST holds fonts drawn dark in a light box: one such image says nothing, sixteen
    dark-on-light images of the model's size say the set is the other way round."""
    boxed = np.full((28, 28), 255, np.uint8)
    boxed[6:22, 10:18] = 0
    pixels, done = prepare_pixels(boxed, FILLING)
    assert done == () and np.array_equal(pixels, boxed.reshape(-1))
    dark = [glyph(letter, light_on_dark=False) for letter in LETTERS * (SET_MIN // 4)]
    view = judge_set([evidence(g, FILLING) for g in dark], FILLING)
    assert view.invert is True
    assert judge_set([evidence(g, FILLING) for g in dark[:SET_MIN - 1]], FILLING) == SetView()
    assert INVERTED in prepare_pixels(dark[0], FILLING, view)[1]


def test_a_set_framed_unlike_the_training_glyphs_is_framed_a_lone_image_within_range_not():
    small = [resize_gray(np.pad(glyph(letter), 14), 28) for letter in LETTERS * 4]  # half size
    view = judge_set([evidence(g, FILLING) for g in small], FILLING)
    assert view == SetView(invert=False, reframe=True, side=28)
    pixels, done = prepare_pixels(small[0], FILLING, view)
    assert done == (FRAMED,)
    lit = np.argwhere(pixels.reshape(28, 28) >= 64)
    assert (lit.max(axis=0) - lit.min(axis=0) + 1).max() >= 26  # now fills the frame
    same = [glyph(letter) for letter in LETTERS * 4]
    assert judge_set([evidence(g, MARGIN) for g in same], MARGIN) == SetView(False, False, 28)


def test_a_data_set_larger_than_the_model_is_read_as_training_read_it():
    """A model trained at 12x12 on 28x28 files: the same files, handed over together, are
    resized exactly as the data loader resized them; one alone is a picture, framed."""
    look = Look(12, light_on_dark=True, glyph_fill=0.8)
    files = [glyph(letter) for letter in LETTERS * 4]
    view = judge_set([evidence(g, look) for g in files], look)
    assert view == SetView(invert=False, reframe=False, side=28)
    pixels, done = prepare_pixels(files[0], look, view)
    assert done == () and np.array_equal(pixels, resize_gray(files[0], 12).reshape(-1))
    assert prepare_pixels(files[0], look)[1] == (FRAMED,)


def test_a_photo_is_inverted_cropped_and_framed_and_a_blank_image_has_no_glyph():
    page = np.full((300, 200), 230, np.uint8)   # grey paper, a dark letter off centre
    page[40:140, 30:90] = 20
    pixels, done = prepare_pixels(page, MARGIN)
    assert done == (INVERTED, FRAMED)
    img = pixels.reshape(28, 28)
    assert img[0].max() < 40 and img[14, 14] > 200  # background dark, glyph light, centred
    blank = np.full((50, 50), 128, np.uint8)
    assert prepare_pixels(blank, MARGIN)[1] == (NO_GLYPH,)
    assert evidence(blank, MARGIN) is None


def test_photos_above_16_7_megapixels_are_read_and_big_jpegs_decoded_reduced():
    assert MAX_PIXELS >= 2 * 89_478_485  # what Pillow itself refuses by default
    big = np.full((4200, 4200), 255, np.uint8)  # 17.6 MP, once refused as a bomb
    big[1000:3000, 1500:2500] = 0
    png = io.BytesIO()
    Image.fromarray(big).save(png, "PNG")
    gray, info = read_gray(png.getvalue(), "big.png")
    assert gray.shape == (4200, 4200) and (info.width, info.height) == (4200, 4200)
    jpeg = io.BytesIO()
    Image.fromarray(big).convert("RGB").save(jpeg, "JPEG", quality=90)
    gray, info = read_gray(jpeg.getvalue(), "big.jpg")
    assert (info.width, info.height) == (4200, 4200)
    assert gray.shape == (1050, 1050)  # decoded at 1/4 by libjpeg
    assert gray[250:750, 375:625].mean() < 20 and gray[:200].mean() > 235


def test_run_own_notmnist_test_files_predict_what_eval_scores(notmnist_path, tmp_path):
    """A quick notMNIST model; its test split written as PNG files; predict over them must
    give eval's predicted class for every image."""
    out = train_cli(tmp_path / "run", f"data.path={notmnist_path}", "model.hidden=[64]",
                    "train.epochs=3", "optim.name=adam", "train.batch_size=256",
                    "data.test_fraction=0.1")
    cfg = load_config(out / "config.yaml")
    test = load_splits(cfg.data, cfg.seed).test
    files = tmp_path / "files"
    for x, name in zip(test.X, test.paths, strict=True):
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(x.reshape(28, 28) * 255).astype(np.uint8)).save(files / name)
    ev = CliRunner().invoke(main, ["eval", str(out), "--json"])
    evaluation = json.loads(ev.stdout)
    pred = CliRunner().invoke(main, ["predict", str(files), "--checkpoint", str(out), "--json"])
    assert pred.exit_code == 0, pred.output
    labels = predicted_labels(pred.stdout, files)
    model = load_model(out)
    eval_labels = [model.classes[i] for i in model.network.predict_proba(test.X).argmax(1)]
    assert [labels[p] for p in test.paths] == eval_labels
    correct = sum(labels[p] == test.classes[y] for p, y in zip(test.paths, test.y, strict=True))
    assert correct / len(test.y) == pytest.approx(evaluation["accuracy"], abs=1e-12)
    assert evaluation["n"] == len(labels) and evaluation["accuracy"] > 0.8
