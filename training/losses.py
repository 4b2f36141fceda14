"""Segmentation losses on labelled pixels only, a registry of them and weighted combinations.

Every loss takes logits (N, K, H, W) and integer targets (N, H, W) in which ``ignore_index``
marks unlabelled pixels (sparse labels: drawn polygons cover a fraction of each block).
Ignored pixels are masked, never indexed out, so a loss has no data-dependent shapes (no
host-device synchronisation) and a batch without any labelled pixel gives a zero loss that
still has a ``grad_fn`` (the training step does not crash).

Conventions:

* Cross-entropy and focal: weighted mean over labelled pixels, weights = class weights of
  each pixel's true class (exactly ``F.cross_entropy(weight=..., ignore_index=...)``).
  Focal with gamma 0 therefore equals the weighted cross-entropy.
* IoU/Jaccard, Dice, Tversky (soft, on softmax probabilities): one score per class over
  all labelled pixels of the batch (not per image: sparse blocks often miss a class), then
  averaged over the classes *present* among the labelled targets. Absent classes are left
  out because their score is undefined (0/0) or meaningless with sparse labels. The loss
  is ``1 - mean score``; no smoothing term, so the values are exact ratios.
* Tversky index = TP / (TP + alpha FP + beta FN) (Salehi et al. 2017); alpha 0.3,
  beta 0.7 penalise missed pixels more (recall), alpha = beta = 0.5 is Dice.
* Lovasz-Softmax (Berman et al. 2018, ``classes='present'``) over labelled pixels.
* Region losses ignore class weights (they are per-class averages already).

The study (seed 001) found focal + IoU best for rare landslide pixels: DEFAULT_LOSS.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from terraseg.protocol.errors import ConfigError, InputError

DEFAULT_LOSS = "focal+iou"


class PixelLoss(nn.Module):
    """Base class: checks shapes, flattens to labelled-pixel rows and calls ``_loss``.

    Args:
        num_classes: Number of classes K (logit channels).
        ignore_index: Target value of unlabelled pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = -1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss over labelled pixels, each weighing ``weight`` (default 1).

        A pixel's weight multiplies its term wherever the labelled-pixel mask enters (the
        cross-entropy's per-pixel weights; the soft counts of region losses; Lovasz errors).

        Shape:
            logits: (N, K, H, W) float; target: (N, H, W) int64 with ignore_index holes;
            weight: (N, H, W) float in [0, 1], or None.
        """
        k = self.num_classes
        if logits.dim() < 2 or logits.shape[1] != k:
            raise InputError(f"Loss expects logits (N, {k}, ...), got {tuple(logits.shape)}.",
                             "Build the loss with the network's number of classes.")
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise InputError(f"Targets {tuple(target.shape)} do not match logits "
                             f"{tuple(logits.shape)}.", "Targets must be (N, H, W).")
        if logits.dtype not in (torch.float32, torch.float64):
            logits = logits.float()  # half-precision logits (AMP): losses in float32
        flat = logits.movedim(1, -1).reshape(-1, k)  # (M, K)
        t = target.reshape(-1)
        mask = t != self.ignore_index
        t = torch.where(mask, t, torch.zeros_like(t))  # any valid class; masked below
        if weight is not None:
            if weight.shape != target.shape:
                raise InputError(f"Pixel weights {tuple(weight.shape)} do not match targets "
                                 f"{tuple(target.shape)}.", "Weights must be (N, H, W).")
            return self._loss(flat, t.long(), mask * weight.reshape(-1).to(flat.dtype))
        return self._loss(flat, t.long(), mask)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Shape: logits (M, K); target (M,) in 0..K-1; mask (M,) bool (labelled)."""
        raise NotImplementedError


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w v) / sum(w), 0 (with grad) when all weights are 0."""
    return (weights * values).sum() / weights.sum().clamp_min(torch.finfo(values.dtype).tiny)


class CrossEntropyLoss(PixelLoss):
    """Class-weighted cross-entropy, mean over labelled pixels weighted by true-class weight.

    Args:
        num_classes: K.
        class_weights: (K,) weights, e.g. inverse class frequency; None = all 1.
        ignore_index: Target value of unlabelled pixels.
    """

    def __init__(self, num_classes: int, class_weights: torch.Tensor | None = None,
                 ignore_index: int = -1) -> None:
        super().__init__(num_classes, ignore_index)
        w = torch.ones(num_classes) if class_weights is None else class_weights.float()
        self.register_buffer("class_weights", w.clone())

    def _pixel_terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        return -logp

    def _loss(self, logits: torch.Tensor, target: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
        w = self.class_weights.to(logits)[target] * mask
        return _weighted_mean(self._pixel_terms(logits, target), w)


class FocalLoss(CrossEntropyLoss):
    """Focal loss -w_t (1 - p_t)^gamma log p_t (Lin et al. 2017), weighted mean like CE.

    The class weights play the role of the paper's alpha; gamma 0 gives the cross-entropy.

    Args:
        num_classes: K.
        class_weights: (K,) alpha per class; None = all 1.
        ignore_index: Target value of unlabelled pixels.
        gamma: Focusing parameter (>= 0); 2 as in the paper and the study.
    """

    def __init__(self, num_classes: int, class_weights: torch.Tensor | None = None,
                 ignore_index: int = -1, gamma: float = 2.0) -> None:
        super().__init__(num_classes, class_weights, ignore_index)
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ConfigError(f"Focal gamma must be >= 0, got {gamma}.", "Use e.g. gamma=2.")
        self.gamma = float(gamma)

    def _pixel_terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        if self.gamma == 0:
            return -logp
        # clamp: (1 - p)^gamma has an infinite slope at p = 1 for gamma < 1
        return -((1 - logp.exp()).clamp_min(1e-12) ** self.gamma) * logp


class RegionLoss(PixelLoss):
    """Soft region overlap per class on softmax probabilities, 1 - mean over present classes.

    Subclasses define ``_score(tp, fp, fn)`` per class from the soft counts
    TP = sum p y, FP = sum p (1 - y), FN = sum (1 - p) y over labelled pixels.
    """

    def _score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor,
               tiny: float) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _loss(self, logits: torch.Tensor, target: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None].to(logits.dtype)
        p = F.softmax(logits, dim=1) * m  # (M, K); zero on unlabelled rows
        y = F.one_hot(target, self.num_classes).to(p.dtype) * m
        tp = (p * y).sum(0)
        fp = p.sum(0) - tp
        fn = y.sum(0) - tp
        present = (y.sum(0) > 0).to(p.dtype)
        # a present class has TP + FN >= 1, so every denominator below is > 0 there
        tiny = torch.finfo(p.dtype).tiny
        score = self._score(tp, fp, fn, tiny)
        return _weighted_mean(1 - score, present)


class IoULoss(RegionLoss):
    """Soft IoU (Jaccard) loss: 1 - TP / (TP + FP + FN) averaged over present classes."""

    def _score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor,
               tiny: float) -> torch.Tensor:
        return tp / (tp + fp + fn).clamp_min(tiny)


class DiceLoss(RegionLoss):
    """Soft Dice loss: 1 - 2 TP / (2 TP + FP + FN) averaged over present classes."""

    def _score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor,
               tiny: float) -> torch.Tensor:
        return 2 * tp / (2 * tp + fp + fn).clamp_min(tiny)


class TverskyLoss(RegionLoss):
    """Soft Tversky loss: 1 - TP / (TP + alpha FP + beta FN) averaged over present classes.

    Args:
        num_classes: K.
        ignore_index: Target value of unlabelled pixels.
        alpha: Weight of false positives (>= 0).
        beta: Weight of false negatives (> 0); beta > alpha favours recall.
    """

    def __init__(self, num_classes: int, ignore_index: int = -1, alpha: float = 0.3,
                 beta: float = 0.7) -> None:
        super().__init__(num_classes, ignore_index)
        if not (math.isfinite(alpha) and math.isfinite(beta) and alpha >= 0 and beta > 0):
            raise ConfigError(f"Tversky needs alpha >= 0 and beta > 0, got {alpha}, {beta}.",
                              "Use e.g. alpha=0.3, beta=0.7.")
        self.alpha, self.beta = float(alpha), float(beta)

    def _score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor,
               tiny: float) -> torch.Tensor:
        return tp / (tp + self.alpha * fp + self.beta * fn).clamp_min(tiny)


def lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors.

    Shape:
        fg_sorted: (K, M) 0/1 ground truth per class, sorted by decreasing error -> (K, M).
    """
    gts = fg_sorted.sum(1, keepdim=True)
    intersection = gts - fg_sorted.cumsum(1)
    union = gts + (1 - fg_sorted).cumsum(1)  # >= 1 everywhere (see Berman et al.)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


class LovaszSoftmaxLoss(PixelLoss):
    """Lovasz-Softmax loss (Berman et al. 2018) over labelled pixels, present classes.

    Per class c, errors |y_c - p_c| on labelled pixels are sorted in decreasing order and
    dotted with the Lovasz gradient of the Jaccard loss; classes absent from the labelled
    targets are skipped, the rest averaged. Unlabelled pixels get error 0 and ground truth
    0, which sorts them last and leaves the value unchanged, so no pixel is indexed out.
    """

    def _loss(self, logits: torch.Tensor, target: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
        m = mask[None, :].to(logits.dtype)
        p = F.softmax(logits, dim=1).t()  # (K, M)
        fg = F.one_hot(target, self.num_classes).t().to(p.dtype) * m
        errors = (fg - p).abs() * m
        errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
        grad = lovasz_grad(fg.gather(1, perm))
        per_class = (errors_sorted * grad).sum(1)
        present = (fg.sum(1) > 0).to(p.dtype)
        return _weighted_mean(per_class, present)


class CombinedLoss(nn.Module):
    """Weighted sum of losses; ``last_terms`` keeps each term's last value for logging.

    Args:
        terms: (name, weight, loss) triples.
    """

    def __init__(self, terms: list[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        self.names = [n for n, _, _ in terms]
        self.weights = [w for _, w, _ in terms]
        self.losses = nn.ModuleList([loss for _, _, loss in terms])
        self.last_terms: dict[str, torch.Tensor] = {}

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. "focal:0.5,iou:0.5" (for the model file)."""
        return ",".join(f"{n}:{w:g}" for n, w in zip(self.names, self.weights, strict=True))

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted sum. Shape: logits (N, K, H, W); target and weight (N, H, W)."""
        values = [loss(logits, target, weight) for loss in self.losses]
        self.last_terms = {n: v.detach() for n, v in zip(self.names, values, strict=True)}
        return torch.stack([w * v for w, v in zip(self.weights, values, strict=True)]).sum()


LossFactory = Callable[[int, "torch.Tensor | None", int], nn.Module]
"""(num_classes, class_weights, ignore_index) -> loss module."""

LOSSES: dict[str, LossFactory] = {
    "ce": lambda k, w, ig: CrossEntropyLoss(k, w, ig),
    "focal": lambda k, w, ig: FocalLoss(k, w, ig),
    "iou": lambda k, w, ig: IoULoss(k, ig),
    "jaccard": lambda k, w, ig: IoULoss(k, ig),
    "dice": lambda k, w, ig: DiceLoss(k, ig),
    "tversky": lambda k, w, ig: TverskyLoss(k, ig),
    "lovasz": lambda k, w, ig: LovaszSoftmaxLoss(k, ig),
}


def parse_loss_spec(spec: str) -> tuple[tuple[str, float], ...]:
    """Parse "focal+iou" (equal weights summing to 1) or "focal:0.7,iou:0.3" (as given).

    Terms are separated by "+" or ","; names are case-insensitive.

    Raises:
        ConfigError: Unknown or repeated name, weight missing on some terms only, or a
            weight that is not a positive finite number.
    """
    tokens = [t.strip() for t in str(spec).replace("+", ",").split(",")]
    tokens = [t for t in tokens if t]
    if not tokens:
        raise ConfigError(f"Empty loss '{spec}'.", f"Choose from: {', '.join(LOSSES)}.")
    names: list[str] = []
    weights: list[float | None] = []
    for tok in tokens:
        name, sep, wtxt = tok.partition(":")
        name = name.strip().lower()
        if name not in LOSSES:
            raise ConfigError(f"Unknown loss '{name}' in '{spec}'.",
                              f"Choose from: {', '.join(LOSSES)}, combined as "
                              f"focal+iou or focal:0.7,iou:0.3.")
        if name in names:
            raise ConfigError(f"Loss '{name}' appears twice in '{spec}'.", "List it once.")
        w: float | None = None
        if sep:
            try:
                w = float(wtxt)
            except ValueError:
                w = math.nan
            if not (math.isfinite(w) and w > 0):
                raise ConfigError(f"Loss weight '{wtxt.strip()}' for '{name}' is not a "
                                  "positive number.", "Use e.g. focal:0.7,iou:0.3.")
        names.append(name)
        weights.append(w)
    if all(w is None for w in weights):
        return tuple((n, 1.0 / len(names)) for n in names)
    if any(w is None for w in weights):
        raise ConfigError(f"Loss '{spec}' gives weights to some terms only.",
                          "Give a weight to every term (focal:0.7,iou:0.3) or to none.")
    return tuple((n, float(w)) for n, w in zip(names, weights, strict=True))  # type: ignore[arg-type]


def build_loss(spec: str = DEFAULT_LOSS, num_classes: int = 2,
               class_weights: torch.Tensor | None = None, ignore_index: int = -1) -> nn.Module:
    """Build a loss from its spec.

    A single name without weight returns that loss; anything else a :class:`CombinedLoss`.
    Class weights feed "ce" and "focal" only. Every returned module has a ``spec`` string.

    Args:
        spec: "ce", "focal", "iou", "dice", "tversky", "lovasz", "focal+iou",
            "focal:0.7,iou:0.3", ...
        num_classes: K (>= 2).
        class_weights: (K,) non-negative finite weights, or None.
        ignore_index: Target value of unlabelled pixels.

    Raises:
        ConfigError: Bad spec, class count or class weights.
    """
    terms = parse_loss_spec(spec)
    if int(num_classes) < 2:
        raise ConfigError(f"A loss needs at least 2 classes, got {num_classes}.",
                          "Label at least two classes.")
    if class_weights is not None:
        cw = torch.as_tensor(class_weights, dtype=torch.float32)
        if cw.shape != (num_classes,) or not torch.isfinite(cw).all() or (cw < 0).any():
            raise ConfigError(f"Class weights {cw.tolist()} are not {num_classes} "
                              "non-negative numbers.", "Give one weight >= 0 per class.")
        class_weights = cw
    modules = [(n, w, LOSSES[n](num_classes, class_weights, ignore_index)) for n, w in terms]
    raw = str(spec).strip().lower()
    if len(modules) == 1 and ":" not in raw:
        loss = modules[0][2]
        loss.spec = modules[0][0]  # type: ignore[assignment]
        return loss
    return CombinedLoss(modules)
