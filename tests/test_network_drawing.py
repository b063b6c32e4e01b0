"""network.png: a small network drawn unit by unit (a line per weight, coloured by sign), a big
one block per layer, and ``nnletters report --network-only``."""

import io

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nnletters.cli import main
from nnletters.network_drawing import is_small, network_png
from nnletters.nn.model import MLP
from tests.test_api import tiny_run

LETTERS = [chr(ord("A") + i) for i in range(26)]


def mlp(sizes, **kwargs):
    return MLP(sizes, rng=np.random.default_rng(0), **kwargs)


def pixels(data: bytes) -> np.ndarray:
    """(H, W, 3) int of a PNG."""
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"), dtype=np.int64)


def red_and_blue(rgb: np.ndarray) -> tuple[int, int]:
    """How many pixels are clearly red (positive weights) and clearly blue (negative)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r > b + 60) & (r > g + 60)).sum()), int(((b > r + 60) & (b > g + 30)).sum())


def test_the_series_network_is_drawn_unit_by_unit():
    net = mlp([289, 20, 26], activation="sigmoid", init="xavier")
    data, layout = network_png(net, LETTERS, 17)
    assert layout.style == "units"
    assert layout.nodes == 289 + 20 + 26 and layout.edges == 289 * 20 + 20 * 26
    rgb = pixels(data)
    assert rgb.shape[1::-1] == layout.size and 800 <= layout.size[0] <= 2500
    assert (rgb < 250).any(axis=2).mean() > 0.1  # far from blank: lines, grid, labels
    red, blue = red_and_blue(rgb)
    assert red > 2000 and blue > 2000  # xavier weights: both signs, many lines of each


def test_line_colour_follows_the_weight_sign():
    net = mlp([64, 10, 4], activation="tanh")
    for W in (layer.W for layer in net.dense_layers()):
        np.abs(W, out=W)  # every weight positive
    red, blue = red_and_blue(pixels(network_png(net, list("ABCD"), 8)[0]))
    assert red > 1000 and blue == 0
    for W in (layer.W for layer in net.dense_layers()):
        W *= -1  # every weight negative
    red, blue = red_and_blue(pixels(network_png(net, list("ABCD"), 8)[0]))
    assert red == 0 and blue > 1000
    for W in (layer.W for layer in net.dense_layers()):
        W[...] = 0  # no weight, no line
    assert red_and_blue(pixels(network_png(net, list("ABCD"), 8)[0])) == (0, 0)


def test_a_big_network_is_drawn_one_block_per_layer():
    net = mlp([784, 1024, 512, 10], dropout=0.3, batch_norm=True)
    data, layout = network_png(net, list("ABCDEFGHIJ"), 28)
    assert layout.style == "blocks" and layout.nodes == 4 and layout.edges == 3
    rgb = pixels(data)
    assert rgb.shape[1::-1] == layout.size and layout.size[1] > layout.size[0] * 0.6
    assert 0.02 < (rgb < 200).any(axis=2).mean() < 0.5  # text and boxes on white
    assert red_and_blue(rgb) == (0, 0)  # no weight lines


@pytest.mark.parametrize(("sizes", "small"), [
    ([289, 26], True), ([289, 20, 26], True), ([784, 32, 10], True), ([256, 64, 64, 26], True),
    ([784, 64, 10], False), ([289, 65, 26], False), ([784, 1024, 512, 10], False)])
def test_which_networks_are_drawn_unit_by_unit(sizes, small):
    assert is_small(sizes) is small


def test_report_network_only_writes_just_the_picture(tmp_path):
    run = tiny_run(tmp_path)
    result = CliRunner().invoke(main, ["report", str(run), "--network-only"])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {run / 'report' / 'network.png'} (units: 784-16-4)\n"
    assert [p.name for p in (run / "report").iterdir()] == ["network.png"]
    assert pixels((run / "report" / "network.png").read_bytes()).shape[0] > 500
    result = CliRunner().invoke(main, ["report", str(run), "--network-only",
                                       "--out", str(tmp_path / "pics")])
    assert result.exit_code == 0 and (tmp_path / "pics" / "network.png").exists()
    result = CliRunner().invoke(main, ["report", str(run), "--network-only", "--compare"])
    assert result.exit_code == 2
    assert "Error: --network-only draws one RUN_DIR; drop --compare and --data." in result.output
