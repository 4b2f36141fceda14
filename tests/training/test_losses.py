"""Tests for terraseg.training.losses: exact values on hand-computed cases, ignore_index, specs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from terraseg.protocol.errors import ConfigError, InputError
from terraseg.training.losses import (
    DEFAULT_LOSS,
    LOSSES,
    CombinedLoss,
    FocalLoss,
    TverskyLoss,
    build_loss,
    parse_loss_spec,
)

IGN = -1
L3 = math.log(3.0)


def tiny_case() -> tuple[torch.Tensor, torch.Tensor]:
    """2 classes, 2x2 pixels; softmax probabilities (p0, p1) per pixel:

    a (0,0): (1/4, 3/4) target 1     b (0,1): (1/2, 1/2) target 0
    c (1,0): (3/4, 1/4) target 0     d (1,1): (1/4, 3/4) ignored
    """
    logits = torch.tensor([[[[0.0, 0.0], [L3, 0.0]],
                            [[L3, 0.0], [0.0, L3]]]], dtype=torch.float64)
    target = torch.tensor([[[1, 0], [0, IGN]]])
    return logits, target


def value(spec: str, logits: torch.Tensor, target: torch.Tensor, **kw: object) -> float:
    return float(build_loss(spec, logits.shape[1], **kw)(logits, target))


def random_case(seed: int = 0, n: int = 2, k: int = 3, h: int = 5,
                w: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, k, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < 0.4] = IGN
    return logits, target


# ---- exact values on the tiny case ---------------------------------------------------------

def test_tiny_case_probabilities() -> None:
    logits, _ = tiny_case()
    p = F.softmax(logits, 1)[0]
    expected = torch.tensor([[[0.25, 0.5], [0.75, 0.25]], [[0.75, 0.5], [0.25, 0.75]]],
                            dtype=torch.float64)
    torch.testing.assert_close(p, expected)


def test_ce_exact_and_matches_torch() -> None:
    logits, target = tiny_case()
    expected = (2 * math.log(4 / 3) + math.log(2)) / 3
    assert value("ce", logits, target) == pytest.approx(expected, rel=1e-12)
    w = torch.tensor([1.0, 3.0])
    expected_w = (4 * math.log(4 / 3) + math.log(2)) / 5  # weights 3 (a), 1 (b), 1 (c)
    assert value("ce", logits, target, class_weights=w) == pytest.approx(expected_w, rel=1e-6)
    for seed in range(3):
        lg, t = random_case(seed)
        cw = torch.tensor([0.5, 2.0, 1.0])
        ref = F.cross_entropy(lg, t, weight=cw.double(), ignore_index=IGN)
        got = build_loss("ce", 3, class_weights=cw)(lg, t)
        assert float(got) == pytest.approx(float(ref), rel=1e-6)


def test_focal_exact() -> None:
    logits, target = tiny_case()
    # -(1 - p_t)^2 log p_t with p_t = 3/4, 1/2, 3/4
    expected = (math.log(4 / 3) / 16 + math.log(2) / 4 + math.log(4 / 3) / 16) / 3
    assert value("focal", logits, target) == pytest.approx(expected, rel=1e-12)
    f3 = FocalLoss(2, gamma=3.0)(logits, target)
    assert float(f3) == pytest.approx((math.log(4 / 3) / 32 + math.log(2) / 8) / 3, rel=1e-12)


@pytest.mark.parametrize("weights", [None, torch.tensor([0.5, 2.0, 1.0])])
def test_focal_gamma_zero_is_ce(weights: torch.Tensor | None) -> None:
    for seed in range(3):
        lg, t = random_case(seed)
        ce = build_loss("ce", 3, class_weights=weights)(lg, t)
        f0 = FocalLoss(3, weights, IGN, gamma=0.0)(lg, t)
        assert float(f0) == pytest.approx(float(ce), rel=1e-12)


def test_focal_down_weights_easy_pixels() -> None:
    lg, t = random_case(1)
    assert float(build_loss("focal", 3)(lg, t)) < float(build_loss("ce", 3)(lg, t))


def test_iou_dice_tversky_exact() -> None:
    logits, target = tiny_case()
    # class 0: TP 5/4, FP 1/4, FN 3/4;  class 1: TP 3/4, FP 3/4, FN 1/4
    assert value("iou", logits, target) == pytest.approx(1 - (5 / 9 + 3 / 7) / 2, rel=1e-12)
    assert value("iou", logits, target) == pytest.approx(32 / 63, rel=1e-12)
    assert value("jaccard", logits, target) == value("iou", logits, target)
    assert value("dice", logits, target) == pytest.approx(12 / 35, rel=1e-12)
    expected_t = 1 - (1.25 / 1.85 + 0.75 / 1.15) / 2  # TP / (TP + 0.3 FP + 0.7 FN)
    assert value("tversky", logits, target) == pytest.approx(expected_t, rel=1e-12)
    # alpha = beta = 1/2 is Dice, alpha = beta = 1 is IoU
    assert float(TverskyLoss(2, IGN, 0.5, 0.5)(logits, target)) == pytest.approx(12 / 35)
    assert float(TverskyLoss(2, IGN, 1.0, 1.0)(logits, target)) == pytest.approx(32 / 63)


def test_region_losses_average_present_classes_only() -> None:
    logits, _ = tiny_case()
    target = torch.tensor([[[IGN, 0], [0, IGN]]])  # only class 0 labelled (b, c)
    # class 0 over b, c: p0 = 1/2, 3/4 -> TP 5/4, FP 0, FN 3/4; class 1 absent
    assert value("iou", logits, target) == pytest.approx(1 - (5 / 4) / 2, rel=1e-12)
    assert value("dice", logits, target) == pytest.approx(1 - 2.5 / 3.25, rel=1e-12)


def test_region_losses_use_the_whole_batch() -> None:
    lg, t = random_case(2)
    whole = build_loss("iou", 3)(lg, t)
    joined = build_loss("iou", 3)(torch.cat([lg[0], lg[1]], dim=-1)[None],
                                  torch.cat([t[0], t[1]], dim=-1)[None])
    assert float(whole) == pytest.approx(float(joined), rel=1e-12)


def lovasz_reference(probas: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Berman et al.'s lovasz_softmax_flat (classes='present') on (P, C) / (P,)."""
    losses = []
    for c in range(probas.shape[1]):
        fg = (labels == c).double()
        if fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        gt_sorted = fg[perm]
        gts = gt_sorted.sum()
        inter = gts - gt_sorted.cumsum(0)
        union = gts + (1 - gt_sorted).cumsum(0)
        jac = 1.0 - inter / union
        jac[1:] = jac[1:] - jac[:-1].clone()
        losses.append(torch.dot(errors_sorted, jac))
    return torch.stack(losses).mean()


def test_lovasz_exact_and_reference() -> None:
    logits, target = tiny_case()
    # class 0: errors b 1/2 (fg), a 1/4, c 1/4 (fg) -> grads 1/2, 1/6, 1/3 -> 3/8
    # class 1: errors b 1/2, a 1/4 (fg), c 1/4     -> grads 1/2, 1/2, 0   -> 3/8
    assert value("lovasz", logits, target) == pytest.approx(3 / 8, rel=1e-12)
    for seed in range(5):
        lg, t = random_case(seed, k=3 + seed % 2)
        k = lg.shape[1]
        keep = t.reshape(-1) != IGN
        probas = F.softmax(lg, 1).movedim(1, -1).reshape(-1, k)[keep]
        ref = lovasz_reference(probas, t.reshape(-1)[keep])
        assert float(build_loss("lovasz", k)(lg, t)) == pytest.approx(float(ref), rel=1e-10)


def test_perfect_prediction_gives_zero_region_losses() -> None:
    target = torch.tensor([[[0, 1, 1], [IGN, 0, 1]]])
    logits = F.one_hot(target.clamp_min(0), 2).movedim(-1, 1).double() * 200 - 100
    for name in ("iou", "dice", "tversky", "lovasz"):
        assert value(name, logits, target) == pytest.approx(0.0, abs=1e-12)
    assert value("ce", logits, target) == pytest.approx(0.0, abs=1e-12)


# ---- combinations and specs ---------------------------------------------------------------

def test_combination_weights() -> None:
    lg, t = random_case(3)
    focal, iou = value("focal", lg, t), value("iou", lg, t)
    assert value("focal:0.7,iou:0.3", lg, t) == pytest.approx(0.7 * focal + 0.3 * iou)
    assert value("focal+iou", lg, t) == pytest.approx(0.5 * focal + 0.5 * iou)
    assert value(DEFAULT_LOSS, lg, t) == pytest.approx(0.5 * focal + 0.5 * iou)
    loss = build_loss("Focal:2, Dice:1", 3)
    assert isinstance(loss, CombinedLoss) and loss.spec == "focal:2,dice:1"
    total = loss(lg, t)
    assert set(loss.last_terms) == {"focal", "dice"}
    assert float(total) == pytest.approx(2 * focal + value("dice", lg, t))


def test_parse_loss_spec() -> None:
    assert parse_loss_spec("focal+iou") == (("focal", 0.5), ("iou", 0.5))
    assert parse_loss_spec("ce,dice,lovasz") == (("ce", 1 / 3), ("dice", 1 / 3),
                                                   ("lovasz", 1 / 3))
    assert parse_loss_spec(" focal:0.7 , iou:0.3 ") == (("focal", 0.7), ("iou", 0.3))
    assert build_loss("tversky", 2).spec == "tversky"
    assert build_loss("ce:1", 2).spec == "ce:1"


@pytest.mark.parametrize("spec", ["", "bce", "focal+iuo", "focal:0.7,iou", "focal+focal",
                                  "focal:0", "focal:-1", "focal:abc", "focal:inf",
                                  "focal:nan"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_loss(spec, 2)
    assert e.value.hint


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as e:
        build_loss("focal+bce", 2)
    assert "'bce'" in e.value.message
    for name in LOSSES:
        assert name in e.value.hint


def test_bad_classes_and_weights() -> None:
    with pytest.raises(ConfigError):
        build_loss("ce", 1)
    for w in ([1.0], [1.0, -1.0], [1.0, math.inf]):
        with pytest.raises(ConfigError):
            build_loss("ce", 2, class_weights=torch.tensor(w))
    with pytest.raises(ConfigError):
        FocalLoss(2, gamma=-1)
    with pytest.raises(ConfigError):
        TverskyLoss(2, IGN, 0.3, 0.0)


def test_shape_mismatch_is_input_error() -> None:
    loss = build_loss("focal+iou", 3)
    with pytest.raises(InputError):
        loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(InputError):
        loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


# ---- ignore_index, empty batches, gradients -----------------------------------------------

@pytest.mark.parametrize("spec", list(LOSSES) + ["focal:0.7,iou:0.3"])
def test_ignored_pixels_do_not_matter(spec: str) -> None:
    lg, t = random_case(4)
    other = lg.clone()
    ignored = (t == IGN)[:, None].expand_as(lg)
    other[ignored] = torch.randn(int(ignored.sum()), dtype=lg.dtype) * 50
    loss = build_loss(spec, 3, class_weights=torch.tensor([1.0, 2.0, 0.5]))
    assert float(loss(other, t)) == float(loss(lg, t))
    lg.requires_grad_(True)
    loss(lg, t).backward()
    assert torch.isfinite(lg.grad).all()
    assert (lg.grad[ignored] == 0).all()
    assert lg.grad[~ignored].abs().sum() > 0


def test_ignore_index_is_configurable() -> None:
    logits, target = tiny_case()
    t255 = torch.where(target == IGN, torch.tensor(255), target)
    for name in LOSSES:
        loss = build_loss(name, 2, ignore_index=255)
        assert float(loss(logits, t255)) == pytest.approx(value(name, logits, target))


@pytest.mark.parametrize("spec", list(LOSSES) + [DEFAULT_LOSS])
def test_no_labelled_pixel_gives_zero_with_grad(spec: str) -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGN)
    loss = build_loss(spec, 3)(logits, target)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


@pytest.mark.parametrize("spec", list(LOSSES) + [DEFAULT_LOSS])
def test_gradients_finite_for_extreme_logits(spec: str) -> None:
    lg, t = random_case(5)
    lg = (lg.float() * 1e3).requires_grad_(True)  # softmax saturates to exact 0/1
    loss = build_loss(spec, 3)(lg, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lg.grad).all()
    low = FocalLoss(3, gamma=0.5)(lg, t)  # (1 - p)^0.5 has an infinite slope at p = 1
    lg.grad = None
    low.backward()
    assert torch.isfinite(lg.grad).all()


def test_half_precision_logits() -> None:
    lg, t = random_case(6)
    full = build_loss(DEFAULT_LOSS, 3)(lg.float(), t)
    half = build_loss(DEFAULT_LOSS, 3)(lg.bfloat16(), t)
    assert half.dtype == torch.float32
    assert float(half) == pytest.approx(float(full), rel=2e-2)


def test_loss_moves_with_module_to_device_buffers() -> None:
    loss = build_loss("ce", 2, class_weights=torch.tensor([1.0, 3.0]))
    assert "class_weights" in dict(loss.named_buffers())
