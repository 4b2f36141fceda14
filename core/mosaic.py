"""Many tiles as one raster: a GDAL VRT mosaic (e.g. Landslide4Sense or ArcGIS chips).

All tiles must share CRS, pixel size, band count and data type, and lie on one pixel grid
(whole-pixel offsets). Where tiles overlap, the later file (in sorted order) is read; chips
cut from one image hold the same values there. The VRT references the tiles by absolute
path and is written atomically. Tiles are opened with :func:`~terraseg.core.raster.open_raster`,
so a tile that is itself a VRT with missing sources is refused, and so is the mosaic when it
is used after a tile was moved or deleted (naming the missing tiles).

Nodata: the tiles' nodata value is carried into the VRT, and tiles that declare different
values (or some none) are refused, since the mosaic would then show one tile's fill as
data. ``nodata`` sets the VRT's value instead (for tiles that do not declare theirs, such
as chips filled with 0): each tile's own nodata pixels are left out and become it.
"""

from __future__ import annotations

import glob
import math
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from terraseg.core.atomic import atomic_path
from terraseg.core.output_targets import check_output_targets
from terraseg.core.raster import open_raster
from terraseg.protocol.errors import ConfigError, InputError, RasterError

_DTYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
           "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files from paths, folders (their *.tif) and glob patterns, sorted, without repeats."""
    files: set[str] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.update(str(f) for f in p.glob("*.tif"))
            files.update(str(f) for f in p.glob("*.tiff"))
        elif any(ch in item for ch in "*?["):
            files.update(glob.glob(item))
        elif p.exists():
            files.add(str(p))
        else:
            raise InputError(f"Tile {item} not found.", "Check the path, folder or pattern.")
    if not files:
        raise InputError(f"No tiles found in {inputs}.", "Give .tif files, a folder or a glob.")
    return sorted(str(Path(f).resolve()) for f in files)


def build_mosaic(inputs: list[str], out: str | Path, overwrite: bool = False,
                 nodata: float | None = None) -> dict[str, Any]:
    """Write a VRT that mosaics the tiles; returns its path, size, tile count and nodata.

    Args:
        inputs: Tiles, folders (their *.tif) and glob patterns.
        out: VRT file to write.
        overwrite: Replace an existing file.
        nodata: The VRT's nodata value (default: the tiles' own, which must agree).

    Raises:
        RasterError: Tiles differ in CRS, pixel size, band count or type, or nodata (without
            ``nodata``), or are off-grid.
        ConfigError: ``nodata`` is not a finite number.
    """
    out = Path(out)
    if nodata is not None and not math.isfinite(nodata):
        raise ConfigError(f"--nodata is {nodata}, not a finite number.",
                          "Give the tiles' fill value, e.g. --nodata 0.")
    check_output_targets([out], overwrite)
    files = expand_inputs(inputs)
    infos = []
    for f in files:
        with open_raster(f) as ds:
            infos.append({"path": f, "crs": ds.crs, "transform": ds.transform,
                          "width": ds.width, "height": ds.height, "count": ds.count,
                          "dtype": ds.dtypes[0], "nodata": ds.nodata,
                          "nodatavals": ds.nodatavals, "descriptions": ds.descriptions})
    ref = infos[0]
    for info in infos[1:]:
        for key in ("crs", "count", "dtype"):
            if info[key] != ref[key]:
                raise RasterError(
                    f"Tile {Path(info['path']).name} has {key} {info[key]}, but "
                    f"{Path(ref['path']).name} has {ref[key]}.",
                    "Mosaic only tiles of one product (same CRS, bands and data type).")
        if (abs(info["transform"].a - ref["transform"].a) > 1e-9 * abs(ref["transform"].a)
                or abs(info["transform"].e - ref["transform"].e) > 1e-9 * abs(ref["transform"].e)):
            raise RasterError(f"Tile {Path(info['path']).name} has another pixel size.",
                              "Resample the tiles to one pixel size first.")
    res_x, res_y = ref["transform"].a, ref["transform"].e
    left = min(i["transform"].c for i in infos)
    top = max(i["transform"].f for i in infos) if res_y < 0 else min(i["transform"].f
                                                                        for i in infos)
    offsets = []
    for info in infos:
        col = (info["transform"].c - left) / res_x
        row = (info["transform"].f - top) / res_y
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise RasterError(f"Tile {Path(info['path']).name} is not on the mosaic's pixel grid "
                              f"(offset {col:.3f}, {row:.3f} px).",
                              "Resample the tiles onto one grid first.")
        offsets.append((round(col), round(row)))
    width = max(c + i["width"] for (c, _), i in zip(offsets, infos, strict=True))
    height = max(r + i["height"] for (_, r), i in zip(offsets, infos, strict=True))
    vrt_nodata = nodata if nodata is not None else _common_nodata(infos)
    xml = _vrt_xml(infos, offsets, width, height, left, top, res_x, res_y, vrt_nodata)
    with atomic_path(out) as tmp:
        tmp.write_text(xml, encoding="utf-8")
    return {"mosaic": str(out), "tiles": len(infos), "width_px": width, "height_px": height,
            "nodata": vrt_nodata}


def _nodata_key(value: float | None) -> str:
    """A comparable key of a nodata value (NaN equals NaN)."""
    return "none" if value is None else ("nan" if math.isnan(value) else repr(float(value)))


def _common_nodata(infos: list[dict]) -> float | None:
    """The nodata value every band of every tile declares (None: none declares one).

    Raises:
        RasterError: Tiles (or bands) declare different values, or only some declare one.
    """
    by_key: dict[str, list[str]] = {}
    for info in infos:
        for value in info["nodatavals"]:
            by_key.setdefault(_nodata_key(value), []).append(Path(info["path"]).name)
    if len(by_key) > 1:
        shown = "; ".join(f"{key if key != 'none' else 'no nodata'}: "
                          f"{', '.join(sorted(set(names))[:3])}"
                          f"{' ...' if len(set(names)) > 3 else ''}"
                          for key, names in by_key.items())
        raise RasterError(f"The tiles declare different nodata values ({shown}).",
                          "Give the mosaic's nodata value with --nodata (e.g. --nodata 0 for "
                          "chips filled with 0); each tile's own nodata pixels become it.")
    return infos[0]["nodatavals"][0]


def _vrt_xml(infos: list[dict], offsets: list[tuple[int, int]], width: int, height: int,
             left: float, top: float, res_x: float, res_y: float,
             nodata: float | None) -> str:
    ref = infos[0]
    dtype = _DTYPES.get(ref["dtype"])
    if dtype is None:
        raise RasterError(f"Data type {ref['dtype']} cannot be mosaicked.",
                          f"Use one of {', '.join(_DTYPES)}.")
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS>{escape(ref['crs'].to_wkt()) if ref['crs'] else ''}</SRS>",
             f"  <GeoTransform>{left!r}, {res_x!r}, 0.0, {top!r}, 0.0, {res_y!r}</GeoTransform>"]
    for b in range(1, ref["count"] + 1):
        lines.append(f'  <VRTRasterBand dataType="{dtype}" band="{b}">')
        if nodata is not None:
            lines.append(f"    <NoDataValue>{_vrt_number(nodata)}</NoDataValue>")
        desc = ref["descriptions"][b - 1]
        if desc:
            lines.append(f"    <Description>{escape(desc)}</Description>")
        for info, (col, row) in zip(infos, offsets, strict=True):
            w, h = info["width"], info["height"]
            own = info["nodatavals"][b - 1]
            nd = f"<NODATA>{_vrt_number(own)}</NODATA>" if own is not None else ""
            lines += [
                "    <ComplexSource>",
                f'      <SourceFilename relativeToVRT="0">{escape(info["path"])}'
                "</SourceFilename>",
                f"      <SourceBand>{b}</SourceBand>",
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                f'      <DstRect xOff="{col}" yOff="{row}" xSize="{w}" ySize="{h}"/>',
                f"      {nd}",
                "    </ComplexSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def _vrt_number(value: float) -> str:
    """A nodata value as VRT text (``nan`` for NaN)."""
    return "nan" if math.isnan(value) else repr(float(value))
