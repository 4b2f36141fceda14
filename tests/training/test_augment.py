"""Tests for terraseg.training.augment: geometric consistency, noise scales, parsing."""

from __future__ import annotations

import numpy as np
import pytest

from terraseg.protocol.errors import ConfigError
from terraseg.training.augment import AUGMENTORS, AugmentChain, AugmentConfig

P, K = 11, 3
M = (P - K) // 2


def ramp_pair(c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """x: channel 0 = row*P + col (unique per pixel), others derived; y = centre of channel 0."""
    ramp = (np.arange(P)[:, None] * P + np.arange(P)[None, :]).astype(np.float32)
    x = np.stack([ramp] + [ramp * (i + 2) - 7 for i in range(c - 1)]).astype(np.float32)
    y = ramp[M : M + K, M : M + K].astype(np.int64)
    return x, y


def dihedral(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """One of the 8 symmetries of the square on the last two axes."""
    b = np.rot90(a, k, axes=(-2, -1))
    return b[..., ::-1] if flip else b


def which_symmetry(x0: np.ndarray, x1: np.ndarray) -> tuple[int, bool]:
    hits = [(k, f) for k in range(4) for f in (False, True)
            if np.array_equal(dihedral(x0, k, f), x1)]
    assert len(hits) == 1, "output is not a symmetry of the input"
    return hits[0]


@pytest.mark.parametrize("spec", ["flip", "rotate", "flip,rotate", "rotate,flip"])
def test_geometric_image_and_target_consistent(spec: str) -> None:
    chain = AugmentChain(AugmentConfig.parse(spec))
    x, y = ramp_pair()
    seen = set()
    for seed in range(64):
        x1, y1 = chain(x.copy(), y.copy(), np.random.default_rng(seed))
        assert x1.dtype == np.float32 and y1.dtype == np.int64
        assert x1.flags.c_contiguous and y1.flags.c_contiguous
        sym = which_symmetry(x, x1)
        seen.add(sym)
        # the target moved with the image: the centre block of x' is y'
        np.testing.assert_array_equal(x1[0, M : M + K, M : M + K], y1)
        # and y' is the same symmetry of y
        np.testing.assert_array_equal(y1, dihedral(y, *sym))
        # every channel got the same transform
        for ch in range(1, x.shape[0]):
            np.testing.assert_array_equal(x1[ch], dihedral(x[ch], *sym))
    expected = {"flip": 4, "rotate": 4}.get(spec, 8)
    assert len(seen) == expected  # all variants are drawn


def test_flip_draws() -> None:
    """Flip: first draw < 0.5 flips rows (up-down), second < 0.5 flips columns."""
    fn, _ = AUGMENTORS["flip"]
    x, y = ramp_pair(1)
    for seed in range(20):
        draws = np.random.default_rng(seed).random(2)
        x1, y1 = fn(x, y, np.random.default_rng(seed), 0.0)
        ex = x[:, ::-1, :] if draws[0] < 0.5 else x
        ex = ex[:, :, ::-1] if draws[1] < 0.5 else ex
        np.testing.assert_array_equal(x1, ex)
        ey = y[::-1, :] if draws[0] < 0.5 else y
        ey = ey[:, ::-1] if draws[1] < 0.5 else ey
        np.testing.assert_array_equal(y1, ey)


def test_rotate_uses_rot90_semantics() -> None:
    fn, _ = AUGMENTORS["rotate"]
    x, y = ramp_pair(2)
    ks = set()
    for seed in range(20):
        k = int(np.random.default_rng(seed).integers(4))
        ks.add(k)
        x1, y1 = fn(x, y, np.random.default_rng(seed), 0.0)
        np.testing.assert_array_equal(x1, np.rot90(x, k, axes=(1, 2)))
        np.testing.assert_array_equal(y1, np.rot90(y, k))
        if k == 1:  # counter-clockwise: the top-right corner moves to the top-left
            assert x1[0, 0, 0] == x[0, 0, P - 1] == P - 1
            assert y1[0, 0] == y[0, K - 1]
    assert ks == {0, 1, 2, 3}


def test_pixel_noise_scale_and_target_untouched() -> None:
    chain = AugmentChain(AugmentConfig.parse("pixel_noise", pixel_noise=0.1))
    x = np.full((4, 101, 101), 3.0, np.float32)
    y = np.arange(25, dtype=np.int64).reshape(5, 5)
    x1, y1 = chain(x, y, np.random.default_rng(0))
    d = x1 - x
    assert x1.dtype == np.float32
    assert d.std() == pytest.approx(0.1, rel=0.03)
    assert abs(d.mean()) < 0.005
    assert len(np.unique(d)) > 10_000  # independent per pixel
    np.testing.assert_array_equal(y1, y)
    np.testing.assert_array_equal(x, 3.0)  # input not modified in place


def test_channel_noise_is_constant_per_channel() -> None:
    chain = AugmentChain(AugmentConfig.parse("channel_noise", channel_noise=0.2))
    x = np.zeros((4000, 5, 5), np.float32)
    y = np.zeros((3, 3), np.int64)
    x1, y1 = chain(x, y, np.random.default_rng(1))
    per_channel = x1[:, 0, 0]
    np.testing.assert_array_equal(x1, np.broadcast_to(per_channel[:, None, None], x1.shape))
    assert per_channel.std() == pytest.approx(0.2, rel=0.05)
    np.testing.assert_array_equal(y1, y)


def test_default_noise_scales() -> None:
    assert AUGMENTORS["pixel_noise"][1] == 0.05 and AUGMENTORS["channel_noise"][1] == 0.05
    chain = AugmentChain(AugmentConfig(names=("pixel_noise",)))  # no scales: default
    x = np.zeros((2, 200, 200), np.float32)
    x1, _ = chain(x, np.zeros((3, 3), np.int64), np.random.default_rng(2))
    assert x1.std() == pytest.approx(0.05, rel=0.03)


def test_zero_scale_noise_is_identity() -> None:
    chain = AugmentChain(AugmentConfig.parse("pixel_noise,channel_noise", 0.0, 0.0))
    x, y = ramp_pair()
    x1, y1 = chain(x, y, np.random.default_rng(0))
    np.testing.assert_array_equal(x1, x)
    np.testing.assert_array_equal(y1, y)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("spec", [None, "", "none", " NONE ", "None"])
def test_parse_none(spec: str | None) -> None:
    cfg = AugmentConfig.parse(spec)
    assert cfg.names == () and cfg.scales == ()
    chain = AugmentChain(cfg)
    assert chain.steps == []
    x, y = ramp_pair()
    x1, y1 = chain(x, y, np.random.default_rng(0))
    np.testing.assert_array_equal(x1, x)
    np.testing.assert_array_equal(y1, y)


def test_parse_names_and_scales() -> None:
    cfg = AugmentConfig.parse(" flip + rotate,pixel_noise , channel_noise", 0.1, 0.3)
    assert cfg.names == ("flip", "rotate", "pixel_noise", "channel_noise")
    assert cfg.scales == (0.0, 0.0, 0.1, 0.3)
    assert cfg.to_dict() == {"names": list(cfg.names), "scales": [0.0, 0.0, 0.1, 0.3]}
    chain = AugmentChain(cfg)
    assert [s for _, s in chain.steps] == [0.0, 0.0, 0.1, 0.3]
    assert [fn for fn, _ in chain.steps] == [AUGMENTORS[n][0] for n in cfg.names]


def test_default_config() -> None:
    cfg = AugmentConfig()
    assert cfg.names == ("flip", "rotate")
    assert len(AugmentChain(cfg).steps) == 2


@pytest.mark.parametrize("spec", ["blur", "flip,mixup", "flip,,noise"])
def test_unknown_name_lists_valid_names(spec: str) -> None:
    with pytest.raises(ConfigError) as exc:
        AugmentConfig.parse(spec)
    assert "Unknown augmentation" in exc.value.message
    for name in AUGMENTORS:
        assert name in exc.value.hint
    assert "none" in exc.value.hint


def test_deterministic_for_same_seed() -> None:
    chain = AugmentChain(AugmentConfig.parse("flip,rotate,pixel_noise,channel_noise"))
    x, y = ramp_pair()
    a = chain(x, y, np.random.default_rng(42))
    b = chain(x, y, np.random.default_rng(42))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = chain(x, y, np.random.default_rng(43))
    assert not np.array_equal(a[0], c[0])
