"""Change by classification difference: from-to codes, change probability and areas.

Two class maps on the same grid (core/change_align.py puts them there) are compared pixel
by pixel over the classes of both maps, indexed 1..K (core/change_legend.py):

- the from-to code of a pixel is ``(i_from - 1) * K + i_to`` (1..K*K; 0 = nodata or
  unknown), so the diagonal codes ``(i - 1) * K + i`` are unchanged pixels;
- the change probability of two probability rasters is ``1 - sum_k p1_k p2_k``: the
  probability that independent draws from both dates' class distributions differ;
- a border band of N pixels along every class boundary of either map can be set aside as
  unknown, the usual remedy for sliver changes from a slight misregistration;
- the from-to area table counts compared pixels per (from, to) pair.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from terraseg.core.change_legend import ChangeClasses
from terraseg.protocol.errors import ConfigError

#: Largest from-to code of each output type (0 is nodata, 255 of uint8 kept free).
MAX_CODE_UINT8 = 254
MAX_CODE_UINT16 = 65535


def fromto_dtype(k: int) -> str:
    """The data type fromto.tif needs for K classes: uint8 up to 254 codes, else uint16.

    Raises:
        ConfigError: K*K codes do not fit uint16 (K > 255).
    """
    if k * k <= MAX_CODE_UINT8:
        return "uint8"
    if k * k <= MAX_CODE_UINT16:
        return "uint16"
    raise ConfigError(
        f"The two maps hold {k} classes together: {k * k} from-to codes, more than the "
        f"{MAX_CODE_UINT16} a uint16 raster can hold.",
        "Compare maps with at most 255 classes together (e.g. map both at a coarser level "
        "of the class hierarchy, or merge rare classes first).")


def fromto_codes(a: np.ndarray, b: np.ndarray, compared: np.ndarray,
                 classes: ChangeClasses) -> np.ndarray:
    """From-to code of every pixel; 0 where ``compared`` is False or a code is no class.

    Shape: class codes ``a``, ``b`` and boolean ``compared`` (H, W) -> int64 (H, W).
    """
    lut = classes.index_lut()
    ia = lut[np.clip(a.astype(np.int64), 0, len(lut) - 1)]
    ib = lut[np.clip(b.astype(np.int64), 0, len(lut) - 1)]
    ok = compared & (ia > 0) & (ib > 0)
    return np.where(ok, (ia - 1) * classes.k + ib, 0)


def fromto_matrix(codes: np.ndarray, k: int) -> np.ndarray:
    """Pixel counts per (from, to) index pair: row = from, column = to.

    Shape: codes (H, W) -> int64 (K, K).
    """
    counts = np.bincount(codes.ravel(), minlength=k * k + 1)
    return counts[1:k * k + 1].reshape(k, k)


def changed_codes(k: int) -> np.ndarray:
    """Boolean lookup over codes 0..K*K: True for a change (off-diagonal pair)."""
    idx = np.arange(k * k + 1)
    out = np.zeros(k * k + 1, dtype=bool)
    out[1:] = (idx[1:] - 1) // k != (idx[1:] - 1) % k
    return out


def change_probability(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """``1 - sum_k pa_k pb_k``: probability that the classes of the two dates differ.

    Shape: two (K, H, W) probability stacks over the same K classes (a class a model does
    not have is 0) -> float32 (H, W), clipped to [0, 1].
    """
    same = np.einsum("khw,khw->hw", pa.astype(np.float64), pb.astype(np.float64))
    return np.clip(1.0 - same, 0.0, 1.0).astype(np.float32)


def near_boundary(codes: np.ndarray, valid: np.ndarray, border_px: int) -> np.ndarray:
    """Pixels within ``border_px`` (chessboard distance) of a class boundary.

    A pixel is near a boundary when its (2N+1) x (2N+1) neighbourhood holds two different
    classes; nodata neither counts as a class nor makes a boundary.

    Shape: codes and valid (H, W) -> bool (H, W) (all False for ``border_px`` 0).
    """
    if border_px <= 0:
        return np.zeros(codes.shape, dtype=bool)
    c = codes.astype(np.int64)
    size = 2 * border_px + 1
    hi = ndimage.maximum_filter(np.where(valid, c, -1), size=size, mode="nearest")
    lo = ndimage.minimum_filter(np.where(valid, c, np.iinfo(np.int64).max), size=size,
                                mode="nearest")
    return valid & (hi != lo)


def fromto_rows(matrix: np.ndarray, classes: ChangeClasses, px_area_m2: float
                ) -> list[dict]:
    """The from-to area table: one row per from class; ``<to>_m2`` and ``<to>_pct`` columns.

    Percentages are of the whole compared area, so all cells sum to 100.
    """
    total = int(matrix.sum())
    rows = []
    for i, f in enumerate(classes.codes):
        row: dict = {"from_code": f, "from_class": classes.name(f)}
        for j, t in enumerate(classes.codes):
            n = int(matrix[i, j])
            row[f"{classes.name(t)}_m2"] = round(n * px_area_m2, 3)
            row[f"{classes.name(t)}_pct"] = round(100.0 * n / total, 6) if total else 0.0
        rows.append(row)
    return rows


def top_transitions(matrix: np.ndarray, classes: ChangeClasses, px_area_m2: float,
                    n: int = 10) -> list[dict]:
    """The ``n`` largest changes (off-diagonal pairs) by area, largest first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1]
    out = []
    for flat in order[:n]:
        i, j = divmod(int(flat), classes.k)
        if off[i, j] == 0:
            break
        f, t = classes.codes[i], classes.codes[j]
        out.append({"from": classes.name(f), "to": classes.name(t), "from_code": f,
                    "to_code": t, "code": i * classes.k + j + 1, "pixels": int(off[i, j]),
                    "area_m2": round(float(off[i, j]) * px_area_m2, 3)})
    return out


def transition_mask(codes: np.ndarray, pairs: list[tuple[int, int]], classes: ChangeClasses
                    ) -> np.ndarray:
    """Pixels of the transitions of interest: the pair's number 1..n, 0 elsewhere.

    Shape: from-to codes (H, W) -> uint8 (H, W).
    """
    lut = np.zeros(classes.k * classes.k + 1, dtype=np.uint8)
    index = {c: i for i, c in enumerate(classes.codes)}
    for n, (f, t) in enumerate(pairs, start=1):
        lut[index[f] * classes.k + index[t] + 1] = min(n, 255)
    return lut[codes]
