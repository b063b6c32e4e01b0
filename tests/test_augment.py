"""Batch augmentation: identity when off, exact geometry on known maps, seeded, in range."""

import numpy as np
import pytest

from nnletters.config import AugmentConfig, load_config
from nnletters.data.augment import (
    Augmenter,
    bilinear_sample,
    elastic_upsampler,
    extreme_filter3,
    frame,
    inverse_affine,
)

FULL = dict(enabled=True, translate=0.1, rotate=10.0, shear=10.0, scale=0.1,
            elastic_alpha=1.5, elastic_sigma=4.0, stroke=0.5)


def glyphs(n=16, size=12, seed=0):
    """Light strokes on a dark background, float32 in [0, 1], flattened: (n, size*size)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size), np.float32)
    for i in range(n):
        r, c = rng.integers(2, size - 3, 2)
        x[i, r, 2:-2] = 1.0
        x[i, 2:-2, c] = rng.uniform(0.5, 1.0)
    return x.reshape(n, size * size)


def framed(x, size, fill=0.0):
    return frame(x, size, fill)


def pixel_grid(n, size):
    """Image pixel coordinates (x, y), each (n, size*size) float32."""
    ys, xs = np.divmod(np.arange(size * size, dtype=np.float32), np.float32(size))
    return np.tile(xs, (n, 1)), np.tile(ys, (n, 1))


@pytest.mark.parametrize("cfg", [AugmentConfig(), AugmentConfig(**{**FULL, "enabled": False}),
                                 AugmentConfig(enabled=True)])
def test_off_or_zero_magnitudes_is_identity_and_draws_nothing(cfg):
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    aug = Augmenter(cfg, 12, rng)
    x = glyphs()
    assert not aug.active
    assert aug(x) is x
    assert rng.bit_generator.state == before


def test_full_augmentation_is_seeded_float32_and_in_range():
    x = glyphs(32)
    a = Augmenter(AugmentConfig(**FULL), 12, np.random.default_rng(5))
    b = Augmenter(AugmentConfig(**FULL), 12, np.random.default_rng(5))
    c = Augmenter(AugmentConfig(**FULL), 12, np.random.default_rng(6))
    out_a, out_b = a(x).copy(), b(x).copy()
    assert out_a.dtype == np.float32 and out_a.shape == x.shape
    np.testing.assert_array_equal(out_a, out_b)
    assert not np.array_equal(out_a, c(x))
    assert not np.array_equal(out_a, x)
    assert out_a.min() >= 0.0 and out_a.max() <= 1.0 + 1e-6
    assert not np.array_equal(a(x), out_a)  # the next batch draws new transforms
    np.testing.assert_array_equal(x, glyphs(32))  # the input batch is left alone


def test_bilinear_sample_identity_shift_and_half_pixel():
    size, x = 6, glyphs(3, 6)
    img = x.reshape(3, size, size)
    gx, gy = pixel_grid(3, size)
    gx, gy = gx + 1, gy + 1  # in the frame's pixels
    same = bilinear_sample(framed(x, size), gx.copy(), gy.copy())
    np.testing.assert_array_equal(same, x)
    right = bilinear_sample(framed(x, size, 0.25), gx - 2, gy.copy()).reshape(3, size, size)
    np.testing.assert_array_equal(right[:, :, 2:], img[:, :, :-2])  # moved 2 px right
    assert np.all(right[:, :, :2] == 0.25)  # what came from outside reads the background
    half = bilinear_sample(framed(x, size), gx + 0.5, gy + 0.25).reshape(3, size, size)
    expected = (0.75 * (img[:, :-1, :-1] + img[:, :-1, 1:]) / 2
                + 0.25 * (img[:, 1:, :-1] + img[:, 1:, 1:]) / 2)
    np.testing.assert_allclose(half[:, :-1, :-1], expected, atol=1e-6)
    far = bilinear_sample(framed(x, size, 0.5), gx + 100, gy - 100)
    assert np.all(far == 0.5)


def warp(x, size, cfg, u):
    """Apply the inverse affine map that ``u`` (n, 5) draws to images x (n, size*size)."""
    n = x.shape[0]
    coef = inverse_affine(cfg, size, u.astype(np.float32), np.empty((2 * n, 3), np.float32))
    grid = np.stack([*pixel_grid(1, size), np.ones((1, size * size), np.float32)])[:, 0]
    src = (coef @ grid + 1).astype(np.float32)  # + 1: in the frame's pixels
    return bilinear_sample(framed(x, size), src[:n], src[n:]).reshape(n, size, size)


def no_change(n):
    return np.full((n, 5), 0.5)  # v = 2u - 1 = 0 for every parameter


def test_affine_rotation_by_a_quarter_turn_is_rot90():
    size, x = 8, glyphs(2, 8)
    u = no_change(2)
    u[:, 0] = 1.0  # the largest angle; the dataclass itself does not cap it at 45
    out = warp(x, size, AugmentConfig(enabled=True, rotate=90.0), u)
    turned = np.rot90(x.reshape(2, size, size), k=-1, axes=(1, 2))  # clockwise on screen
    np.testing.assert_allclose(out, turned, atol=1e-5)
    np.testing.assert_array_equal(warp(x, size, AugmentConfig(enabled=True, rotate=30.0),
                                       no_change(2)), x.reshape(2, size, size))


def test_affine_translation_moves_whole_pixels():
    size, x = 8, glyphs(2, 8)
    u = no_change(2)
    u[0, 3], u[1, 4] = 1.0, 0.0  # image 0: +2 px in x; image 1: -2 px in y (2 = 0.25 * 8)
    out = warp(x, size, AugmentConfig(enabled=True, translate=0.25), u)
    img = x.reshape(2, size, size)
    np.testing.assert_allclose(out[0, :, 2:], img[0, :, :-2], atol=1e-6)
    np.testing.assert_allclose(out[1, :-2, :], img[1, 2:, :], atol=1e-6)


def test_zoom_and_shear():
    x = glyphs(8, 16)
    u = no_change(8)
    u[:, 2] = 0.0  # zoom 1 - 0.5: half the size, a quarter of the ink
    out = warp(x, 16, AugmentConfig(enabled=True, scale=0.5), u)
    np.testing.assert_allclose(out.sum(axis=(1, 2)) / x.sum(axis=1), 0.25, atol=0.08)
    bar = np.zeros((1, 16, 16), np.float32)
    bar[0, 2:14, 7:9] = 1.0  # a vertical bar leans under a horizontal shear
    u = no_change(1)
    u[:, 1] = 1.0
    leaned = warp(bar.reshape(1, -1), 16, AugmentConfig(enabled=True, shear=30.0), u)[0]
    columns = [np.average(np.arange(16), weights=row) for row in leaned[3:13]]
    slope = np.polyfit(np.arange(3, 13), columns, 1)[0]
    assert abs(abs(slope) - np.tan(np.deg2rad(30.0))) < 0.1
    assert abs(leaned.sum() - bar.sum()) < 1.0  # a shear keeps the area


def test_elastic_field_is_bounded_and_smooth():
    aug = Augmenter(AugmentConfig(enabled=True, elastic_alpha=2.0, elastic_sigma=4.0), 28,
                    np.random.default_rng(0))
    d = aug._displacements(16)
    assert d.shape == (32, 28, 28) and d.dtype == np.float32
    assert np.abs(d).max() <= 2.0 + 1e-5 and np.abs(d).max() > 1.0
    assert np.abs(np.diff(d, axis=2)).max() <= 2 * 2.0 / 4.0 * 1.05  # bilinear: slope <= 2a/s
    weights = elastic_upsampler(28, 4.0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    blank = np.zeros((4, 28 * 28), np.float32)
    np.testing.assert_array_equal(aug(blank), blank)  # background stays background


def test_extreme_filter3_dilates_and_erodes_a_dot():
    img = np.zeros((1, 7, 7), np.float32)
    img[0, 3, 3] = 1.0
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)))
    grown = extreme_filter3(padded, np.maximum)
    assert grown.sum() == 9 and np.all(grown[0, 2:5, 2:5] == 1)
    assert extreme_filter3(padded, np.minimum).sum() == 0


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_strokes_thicken_or_thin_every_chosen_image(fill):
    x = glyphs(64)
    if fill == 1.0:
        x = 1.0 - x  # dark ink on light paper
    aug = Augmenter(AugmentConfig(enabled=True, stroke=1.0), 12, np.random.default_rng(0),
                    fill=fill)
    out = aug(x)
    ink = (out - x) if fill == 0.0 else (x - out)  # > 0 where ink was added
    thicker = np.all(ink >= -1e-6, axis=1) & np.any(ink > 1e-3, axis=1)
    thinner = np.all(ink <= 1e-6, axis=1) & np.any(ink < -1e-3, axis=1)
    assert np.all(thicker | thinner)
    assert 16 < thicker.sum() < 48  # about half each
    half = Augmenter(AugmentConfig(enabled=True, stroke=0.25), 12, np.random.default_rng(0),
                     fill=fill)
    unchanged = np.all(half(x) == x, axis=1).mean()
    assert 0.6 < unchanged < 0.9


def test_augment_section_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  path: x\n  augment:\n    enabled: true\n    rotate: 12\n")
    cfg = load_config(path)
    assert cfg.data.augment.enabled and cfg.data.augment.rotate == 12.0
    assert load_config(None, ["data.path=x"]).data.augment.enabled is False
