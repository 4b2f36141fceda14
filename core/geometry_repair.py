"""Geometry repair: invalid label geometries made valid without changing their kind.

:func:`shapely.make_valid` may turn an invalid polygon (a bow-tie, a self-touching ring)
into a collection that also holds lines or points. Labels keep only the parts of the
original dimension, so a repaired polygon still burns as an area and never as a stray line.
"""

from __future__ import annotations

import shapely


def repair_geometry(geom: shapely.Geometry) -> shapely.Geometry:
    """``geom`` made valid, keeping only parts of its own dimension (empty if none remain).

    Args:
        geom: An invalid (or valid) geometry.

    Returns:
        A valid geometry of the same topological dimension, or an empty
        ``GeometryCollection``.
    """
    return parts_of_dimension(shapely.make_valid(geom), shapely.get_dimensions(geom))


def parts_of_dimension(geom: shapely.Geometry, dim: int) -> shapely.Geometry:
    """The parts of ``geom`` with topological dimension ``dim`` (e.g. polygons only).

    Args:
        geom: Any geometry, collections (also nested ones) included.
        dim: 0 (points), 1 (lines) or 2 (polygons).

    Returns:
        The union of the polygon parts (``dim`` 2), a MultiLineString or a MultiPoint, or an
        empty ``GeometryCollection`` when ``geom`` has no part of that dimension.
    """
    parts = [
        p
        for p in shapely.get_parts(geom)
        if not p.is_empty and shapely.get_dimensions(p) == dim
    ]
    # make_valid may nest collections; flatten once more.
    flat: list[shapely.Geometry] = []
    for p in parts:
        flat.extend(shapely.get_parts(p))
    flat = [p for p in flat if not p.is_empty and shapely.get_dimensions(p) == dim]
    if not flat:
        return shapely.GeometryCollection()
    if dim == 2:
        return shapely.unary_union(flat)
    return shapely.MultiLineString(flat) if dim == 1 else shapely.MultiPoint(flat)
