"""Command ``pair``: two dates stacked into one pair raster for the direct change networks.

``terraseg pair --raster-a A --raster-b B --out pair.tif`` writes A's bands then B's bands
on A's grid (core/change_stack.py); ``terraseg train --raster pair.tif --model fc_siam_diff
--labels change_mask.tif ...`` and ``terraseg predict`` then read it as any raster.
"""

from __future__ import annotations

import argparse
from typing import Any

from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter


def _pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raster-a", required=True, help="first date (its grid is the output's)")
    p.add_argument("--raster-b", required=True,
                   help="second date (warped bilinearly onto the first date's grid)")
    p.add_argument("--out", required=True, help="pair GeoTIFF to write (float32, NaN = no "
                                                "data)")
    p.add_argument("--bands-a", help="bands of the first date: 1,2,3 or red=1,... (default: "
                                     "all)")
    p.add_argument("--bands-b", help="bands of the second date, as many and in the same "
                                     "order (default: all)")
    p.add_argument("--max-shift", type=float, default=1.0, metavar="PX",
                   help="largest misregistration (pixels, measured by phase correlation) "
                        "accepted; negative: do not check")
    p.add_argument("--correct-shift", action="store_true",
                   help="move the second date by the measured shift instead of refusing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _run_pair(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.change_stack import PairStackOptions, stack_pair

    opts = PairStackOptions(bands_a=a.bands_a, bands_b=a.bands_b, max_shift_px=a.max_shift,
                            correct_shift=a.correct_shift)
    return stack_pair(a.raster_a, a.raster_b, a.out, opts, reporter, overwrite=a.overwrite)


def _print_pair(result: dict[str, Any]) -> str:
    s = result["shift"]
    shift = ("not checked" if s is None else
             f"dx {s['dx_px']:+.2f} dy {s['dy_px']:+.2f} px"
             + (f" (corrected, residual {s['residual_px']:.2f} px)" if s["corrected"] else ""))
    return (f"{result['bands_per_date']} bands per date; shift {shift}; "
            f"{100 * result['covered_fraction']:.1f} % of the first date covered by both -> "
            f"{result['out']}")


register(Command("pair", "stack two dates on the first date's grid (pair raster for the "
                         "change networks fc_ef, fc_siam_diff)", _pair_args, _run_pair,
                 printer=_print_pair))
