"""Reading rasters: band mapping, nodata, windows that may reach past the raster's edge.

Every engine read of a user's raster opens it with :func:`open_raster`, which also refuses
a VRT whose source files are missing: GDAL opens such a VRT and fails (or returns nodata)
only when the pixels are read, after the work has started.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NodataShadowWarning, RasterioIOError
from rasterio.windows import Window

from terraseg.core.grid import Grid
from terraseg.protocol.errors import RasterError

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class BandMapping:
    """Which raster bands feed the model, in model order.

    Attributes:
        indices: 1-based band indices in the raster.
        names: One name per index (e.g. "red", "nir"); recorded in the model file.
    """

    indices: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.names):
            raise RasterError(
                f"Band mapping has {len(self.indices)} indices but {len(self.names)} names.",
                "Give one name per band, e.g. --bands red=1,green=2,blue=3,nir=4.",
            )


def parse_band_mapping(spec: str | None, path: str | Path) -> BandMapping:
    """Parse a band mapping against a raster.

    Accepted forms: ``None`` (all bands), ``"1,2,3,4"`` or ``"red=1,green=2,blue=3,nir=4"``.
    Names default to the raster's band descriptions, else ``band_<index>``.

    Raises:
        RasterError: An index is out of range, repeated or not a number.
    """
    with open_raster(path) as src:
        count = src.count
        descriptions = list(src.descriptions)
    if spec is None or not str(spec).strip():
        pairs: list[tuple[str | None, str]] = [(None, str(i)) for i in range(1, count + 1)]
    else:
        pairs = []
        for token in str(spec).split(","):
            token = token.strip()
            if "=" in token:
                name, idx = token.split("=", 1)
                pairs.append((name.strip(), idx.strip()))
            else:
                pairs.append((None, token))
    indices: list[int] = []
    names: list[str] = []
    for name, idx in pairs:
        try:
            i = int(idx)
        except ValueError:
            raise RasterError(
                f"Band '{idx}' in the band mapping '{spec}' is not a band number.",
                "Use 1-based band numbers, e.g. --bands 1,2,3,4 or --bands red=1,nir=4.",
            ) from None
        if not 1 <= i <= count:
            raise RasterError(
                f"Band index {i} is out of range: {Path(path).name} has {count} band(s).",
                f"Use band numbers between 1 and {count} in --bands.",
            )
        if i in indices:
            raise RasterError(f"Band {i} appears twice in the band mapping.", "List each once.")
        indices.append(i)
        names.append(name or descriptions[i - 1] or f"band_{i}")
    return BandMapping(tuple(indices), tuple(names))


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a raster for reading with a clear error when it cannot be read.

    Raises:
        RasterError: The file is missing or not a raster, or it is a VRT whose source files
            are missing (naming them).
    """
    p = Path(path)
    if not p.exists() and "://" not in str(path) and not str(path).startswith("/vsi"):
        raise RasterError(f"Raster not found: {path}.", "Check the path to the raster file.")
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterError(
            f"Cannot read raster {path}: {exc}.",
            "Give a GDAL-readable raster (GeoTIFF, COG, VRT, ...).",
        ) from exc
    missing = missing_vrt_sources(p) if ds.driver == "VRT" and p.is_file() else []
    if missing:
        ds.close()
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise RasterError(
            f"Raster {path} is a VRT whose source file(s) are missing: "
            f"{', '.join(missing[:3])}{more}.",
            "Restore the files or rebuild the VRT where they are now (terraseg mosaic, "
            "gdalbuildvrt).",
        )
    return ds


#: Source names that are not plain files (``/vsizip/...``, ``HDF5:"f.h5":x``, URLs).
_NOT_A_FILE = re.compile(r"^(/vsi|[A-Za-z0-9_]{2,}:)")


def missing_vrt_sources(vrt: Path, _depth: int = 0) -> list[str]:
    """Source files a VRT names that do not exist, following nested VRTs.

    Sources that are not plain files (``/vsi`` paths, URLs, subdatasets) are left to GDAL.

    Args:
        vrt: A VRT file.

    Returns:
        The missing paths as the VRT resolves them, in document order.
    """
    try:
        root = ET.parse(vrt).getroot()
    except (OSError, ET.ParseError):
        return []  # GDAL opened it, so leave anything unusual to GDAL
    missing: list[str] = []
    for el in root.iter():
        name = (el.text or "").strip()
        if el.tag not in ("SourceFilename", "SourceDataset") or not name:
            continue
        if _NOT_A_FILE.match(name):
            continue
        src = vrt.parent / name if el.get("relativeToVRT") == "1" else Path(name)
        if not src.exists():
            missing.append(str(src))
        elif src.suffix.lower() == ".vrt" and _depth < 8 and src.resolve() != vrt.resolve():
            missing += missing_vrt_sources(src, _depth + 1)
    return list(dict.fromkeys(missing))


class RasterSource:
    """A raster opened with a band mapping; reads float32 windows plus a validity mask.

    Pixels are invalid where any mapped band is nodata (per the dataset's masks: nodata
    value, alpha band or internal mask) or not finite. Windows may extend past the raster:
    the outside is invalid and filled with 0.

    Args:
        path: Raster path (anything GDAL reads).
        bands: Band mapping; all bands when None.
        nodata: Nodata value that replaces the raster's own masks (for a raster whose
            nodata is not declared, e.g. a mosaic of chips with zeros outside them); None
            keeps the raster's own nodata value, alpha or mask band.
    """

    def __init__(self, path: str | Path, bands: BandMapping | None = None,
                 nodata: float | None = None) -> None:
        self.path = str(path)
        self.nodata_override: float | None = None
        self._ds = open_raster(path)
        if bands is None:
            bands = parse_band_mapping(None, path)
        self.bands = bands
        dtypes = {self._ds.dtypes[i - 1] for i in bands.indices}
        bad = sorted(d for d in dtypes if d not in SUPPORTED_DTYPES)
        if bad:
            raise RasterError(
                f"Raster {path} has unsupported data type(s) {bad}.",
                f"Convert it to one of {', '.join(SUPPORTED_DTYPES)} (e.g. gdal_translate -ot).",
            )
        crs = self._ds.crs
        self.grid = Grid(
            height_px=self._ds.height,
            width_px=self._ds.width,
            transform=self._ds.transform,
            crs_wkt=crs.to_wkt() if crs else "",
        )
        self.override_nodata(nodata)

    def override_nodata(self, value: float | None) -> None:
        """Mask every mapped band by ``value`` instead of the raster's own nodata/masks.

        None goes back to the raster's own. Non-finite pixels stay invalid either way.

        Raises:
            RasterError: ``value`` is not a finite number.
        """
        if value is not None:
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = float("nan")
            if not np.isfinite(value):
                raise RasterError(f"Nodata value {value} is not a finite number.",
                                  "Give a number such as --nodata 0, or leave it out to use "
                                  "the raster's own nodata value.")
        self.nodata_override = value
        self._nodata_key = None  # recompute the per-band masks

    @property
    def count(self) -> int:
        """Number of mapped bands (model input channels)."""
        return len(self.bands.indices)

    @property
    def nodata(self) -> float | None:
        """The nodata value of the first mapped band (or the override), if any."""
        if self.nodata_override is not None:
            return self.nodata_override
        return self._ds.nodatavals[self.bands.indices[0] - 1]

    def close(self) -> None:
        """Close the underlying dataset."""
        self._ds.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a window, which may extend past the raster's edges.

        Returns:
            data: float32 array. Shape: (C, H, W); invalid pixels are 0.
            valid: bool array. Shape: (H, W).
        """
        row0, col0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        data = np.zeros((self.count, h, w), dtype=np.float32)
        valid = np.zeros((h, w), dtype=bool)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1, c1 = min(row0 + h, self.grid.height_px), min(col0 + w, self.grid.width_px)
        if r1 <= r0 or c1 <= c0:
            return data, valid
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        idx = list(self.bands.indices)
        arr = self._ds.read(idx, window=inner, out_dtype="float32")
        ok = self._valid_mask(arr, inner)
        arr[:, ~ok] = 0.0
        data[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = arr
        valid[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = ok
        return data, valid

    @property
    def _nodata_values(self) -> list[np.float32 | None] | None:
        """Per mapped band, the nodata value that masks it (None: unmasked).

        None overall when some band has another kind of mask (alpha, mask band), so GDAL's
        masks must be read. A nodata override (:meth:`override_nodata`) masks every band.
        Computed once per band mapping, not on every read.
        """
        key = self.bands.indices
        if getattr(self, "_nodata_key", None) != key:
            if self.nodata_override is not None:
                self._nodata_cache = [np.float32(self.nodata_override)] * len(key)
                self._nodata_key = key
                return self._nodata_cache
            flags = [self._ds.mask_flag_enums[i - 1] for i in key]
            if all(set(f) <= {MaskFlags.nodata, MaskFlags.all_valid} for f in flags):
                self._nodata_cache: list[np.float32 | None] | None = [
                    np.float32(self._ds.nodatavals[i - 1])
                    if MaskFlags.nodata in f and self._ds.nodatavals[i - 1] is not None
                    else None for i, f in zip(key, flags, strict=True)]
            else:
                self._nodata_cache = None
            self._nodata_key = key
        return self._nodata_cache

    def _valid_mask(self, arr: np.ndarray, window: Window) -> np.ndarray:
        """Pixels valid in every mapped band (nodata value, alpha or mask band; finite).

        When every mapped band is masked only by a nodata value (or not at all), the mask
        comes from the values already read; otherwise GDAL's masks are read.
        """
        if self._nodata_values is not None:
            ok = np.all(np.isfinite(arr), axis=0)
            for b, nd in enumerate(self._nodata_values):
                if nd is not None:
                    ok &= arr[b] != nd
            return ok
        with warnings.catch_warnings():
            # a 4-band raster with a nodata value: nodata decides, as documented
            warnings.simplefilter("ignore", NodataShadowWarning)
            masks = self._ds.read_masks(list(self.bands.indices), window=window)
        return np.all(masks > 0, axis=0) & np.all(np.isfinite(arr), axis=0)

    def block_windows(self, block_px: int = 1024) -> list[Window]:
        """Windows that tile the whole raster in blocks of at most ``block_px`` square."""
        wins = []
        for r in range(0, self.grid.height_px, block_px):
            for c in range(0, self.grid.width_px, block_px):
                wins.append(
                    Window(
                        c,
                        r,
                        min(block_px, self.grid.width_px - c),
                        min(block_px, self.grid.height_px - r),
                    )
                )
        return wins
