#!/usr/bin/env bash
# Create or update TerraSeg's isolated engine environment (called by `make install`).
#
# The engine (torch, rasterio, zarr, lightning, ...) lives in its own virtual environment,
# never in QGIS's Python: see ../shared/notes/ENVIRONMENT.md for the measured clash
# (numpy 2 vs QGIS's numpy 1.24, GDAL bindings, attrs). The venv is isolated on purpose
# (no --system-site-packages).
#
# Idempotent: a stamp file <venv>/.installed-<hash> records the hash of the requirement
# files, pyproject.toml and this script; when it is present nothing is reinstalled.
#
# Environment:
#   ENGINE_VENV  venv directory (default: .venv-engine in the repository root)
#   PYTHON       interpreter that creates the venv (default: python3)
#   FORCE=1      reinstall even when the stamp is present
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

venv=${ENGINE_VENV:-.venv-engine}
python=${PYTHON:-python3}
inputs=(requirements/engine.txt requirements/dev.txt pyproject.toml scripts/install_engine.sh)

for f in "${inputs[@]}"; do
  [ -f "$f" ] || { echo "install_engine: missing $root/$f" >&2; exit 1; }
done
hash=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
stamp="$venv/.installed-$hash"

venv_usable() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' 2>/dev/null \
    && grep -qiE '^include-system-site-packages *= *false' "$venv/pyvenv.cfg" 2>/dev/null
}

if [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] && venv_usable; then
  echo "engine environment up to date: $venv"
  exit 0
fi

if [ -d "$venv" ] && ! venv_usable; then
  echo "install_engine: $venv is broken or not isolated; recreating it" >&2
  rm -rf "$venv"
fi
if [ ! -d "$venv" ]; then
  command -v "$python" >/dev/null || { echo "install_engine: '$python' not found; set PYTHON=/path/to/python3 (>= 3.10)" >&2; exit 1; }
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "install_engine: $("$python" --version 2>&1) is too old; TerraSeg needs Python >= 3.10 (set PYTHON=...)" >&2; exit 1; }
  echo "creating isolated engine environment: $venv ($("$python" --version 2>&1))"
  "$python" -m venv "$venv"
fi

rm -f "$venv"/.installed-*
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
echo "installing pinned engine requirements into $venv"
"${pip[@]}" install -r requirements/engine.txt -r requirements/dev.txt
echo "installing terraseg (editable, no dependencies)"
"${pip[@]}" install --no-deps -e .

# A cheap smoke test of what the engine cannot run without, then the stamp.
"$venv/bin/python" -c 'import torch, rasterio, fiona, shapely, sklearn, zarr, lightning, safetensors'
[ -x "$venv/bin/terraseg" ] || { echo "install_engine: $venv/bin/terraseg was not created" >&2; exit 1; }
touch "$stamp"
echo "engine environment ready: $venv (terraseg: $venv/bin/terraseg)"
