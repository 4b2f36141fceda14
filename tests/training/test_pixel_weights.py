"""Per-pixel loss weights in the targets (training/pixel_weights.py) and in the losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terraseg.training.augment import AugmentChain, AugmentConfig
from terraseg.training.losses import build_loss
from terraseg.training.pixel_weights import WEIGHT_STEPS, decode_targets, encode, quantise


def test_targets_round_trip_class_and_weight_and_keep_holes() -> None:
    index = np.array([[0, 1, -1], [2, 0, 1]])
    weights = np.array([[1.0, 0.5, 0.7], [0.0, 0.25, 2.0]])
    y = encode(index, quantise(weights))
    assert y[0, 2] == -1
    back, w = decode_targets(torch.from_numpy(y))
    assert back.tolist() == index.tolist()
    expected = np.round(np.clip(weights, 0, 1) * WEIGHT_STEPS) / WEIGHT_STEPS
    expected[0, 2] = 0.0  # unlabelled: no weight
    np.testing.assert_allclose(w.numpy(), expected, atol=1e-7)


def test_a_flip_moves_each_weight_with_its_label() -> None:
    index = np.arange(16).reshape(4, 4) % 3
    steps = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    y = encode(index, steps)
    x = np.zeros((1, 4, 4), dtype=np.float32)
    chain = AugmentChain(AugmentConfig.parse("flip,rotate"))
    for seed in range(6):
        _, yy = chain(x, y, np.random.default_rng(seed))
        back, w = decode_targets(torch.from_numpy(yy))
        # the pairing (class, weight) of every pixel survives the transform
        pairs = sorted(zip(back.ravel().tolist(), (w * WEIGHT_STEPS).round().ravel().tolist(),
                           strict=True))
        assert pairs == sorted(zip(index.ravel().tolist(), steps.ravel().tolist(), strict=True))


@pytest.mark.parametrize("spec", ["ce", "focal", "dice", "focal+iou", "lovasz"])
def test_unit_weights_change_nothing_and_zero_weights_drop_pixels(spec: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    target = torch.randint(0, 3, (2, 5, 5), generator=g)
    target[0, 0, :] = -1
    loss = build_loss(spec, 3, torch.tensor([1.0, 2.0, 0.5]), -1)
    plain = loss(logits, target)
    assert torch.isclose(loss(logits, target, torch.ones(2, 5, 5)), plain)
    drop = torch.ones(2, 5, 5)
    drop[1, 2:, :] = 0.0
    masked = target.clone()
    masked[1, 2:, :] = -1
    assert torch.isclose(loss(logits, target, drop), loss(logits, masked), atol=1e-6)


def test_cross_entropy_weighs_each_pixel() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])
    w = torch.tensor([[[1.0, 0.25]]])
    terms = -torch.log_softmax(logits, dim=1)[0, 0, 0]  # the true class 0 at each pixel
    expected = (terms * w[0, 0]).sum() / w.sum()
    got = build_loss("ce", 2, None, -1)(logits, target, w)
    assert torch.isclose(got, expected)
