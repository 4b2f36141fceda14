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
# Only what this script made is ever deleted or replaced. It writes the marker file
# <venv>/.terraseg-engine when it creates an environment (the plugin runs no engine without
# it). An existing folder is used only when it carries the marker, is empty, or is an
# isolated TerraSeg environment made by an earlier release (bin/terraseg and an installed
# terraseg distribution: the marker is added, nothing is deleted); any other folder is
# refused before anything in it is run or changed. Repairing a marked environment removes
# only the virtual environment's own entries (bin, lib, include, pyvenv.cfg, ...).
#
# Environment:
#   ENGINE_VENV  venv directory (default: .venv-engine in the repository root)
#   PYTHON       interpreter that creates the venv (default: python3)
#   FORCE=1      reinstall even when the stamp is present
#   WHEELS_DIR   install offline from this folder of wheels (pip --no-index --find-links);
#                it must hold every requirement and, for the editable install of terraseg,
#                setuptools>=68 and wheel (`pip download -d DIR -r requirements/engine.txt
#                -r requirements/dev.txt setuptools wheel` on a machine with internet)
#   TORCH_VARIANT cpu|cuda: the torch build wanted (the QGIS plugin picks it by looking for an
#                NVIDIA GPU). Printed, recorded in <venv>/.torch-variant and checked after the
#                install (a mismatch is a warning). Empty (default): whatever pip resolves.
#   TORCH_INDEX_URL  install torch first from this index, e.g. the CPU-only builds at
#                https://download.pytorch.org/whl/cpu (ignored with WHEELS_DIR)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

venv=${ENGINE_VENV:-.venv-engine}
python=${PYTHON:-python3}
inputs=(requirements/engine.txt requirements/dev.txt pyproject.toml scripts/install_engine.sh)

for f in "${inputs[@]}"; do
  [ -f "$f" ] || { echo "install_engine: missing $root/$f" >&2; exit 1; }
done
variant=${TORCH_VARIANT:-}
case "$variant" in
  ""|cpu|cuda) ;;
  *) echo "install_engine: TORCH_VARIANT must be cpu or cuda, not '$variant'" >&2; exit 1 ;;
esac
wheels=${WHEELS_DIR:-}
if [ -n "$wheels" ] && [ ! -d "$wheels" ]; then
  echo "install_engine: WHEELS_DIR '$wheels' is not a folder" >&2
  exit 1
fi
# The torch variant is part of the stamp (switching it reinstalls); unset keeps the old hash.
hash=$( { cat "${inputs[@]}"; [ -z "$variant" ] || echo "torch-variant=$variant"; } \
  | sha256sum | cut -c1-16)
stamp="$venv/.installed-$hash"

marker="$venv/.terraseg-engine"
case "$venv" in /*) venv_abs=$venv ;; *) venv_abs=$root/$venv ;; esac

write_marker() {  # $1: what happened (created / adopted)
  cat > "$marker" <<MARKER
TerraSeg engine environment ($1 by scripts/install_engine.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)).
This folder is a Python virtual environment that TerraSeg's installer manages: setting up
the engine again may remove and recreate its environment files (bin, lib, include,
pyvenv.cfg, ...). Keep no other files here. The TerraSeg QGIS plugin runs an engine only
from a folder that carries this file.
MARKER
}

owned() {  # the marker is a plain file written by this script
  [ -f "$marker" ] && [ ! -L "$marker" ]
}

made_by_earlier_release() {  # judged from files only: nothing in the folder is run
  [ -x "$venv/bin/python" ] && [ -x "$venv/bin/terraseg" ] || return 1
  grep -qiE '^include-system-site-packages *= *false' "$venv/pyvenv.cfg" 2>/dev/null || return 1
  local dist
  for dist in "$venv"/lib/python3*/site-packages/terraseg-*.dist-info/METADATA; do
    [ -f "$dist" ] && return 0
  done
  return 1
}

# Whose folder is it? Decided before anything in it is run, changed or deleted.
if [ -e "$venv" ] || [ -L "$venv" ]; then
  if [ ! -d "$venv" ]; then
    echo "install_engine: refusing to use $venv_abs: it is not a folder. Fix: choose an" \
      "empty or new folder for the engine." >&2
    exit 1
  elif owned; then
    :
  elif [ -r "$venv" ] && [ -z "$(ls -A "$venv")" ]; then
    echo "using the empty folder $venv_abs for the engine"
    write_marker created
  elif made_by_earlier_release; then
    write_marker adopted
    echo "adopting the TerraSeg engine made by an earlier release in $venv_abs: added the" \
      "marker $marker; nothing was deleted"
  else
    echo "install_engine: refusing to use $venv_abs: the folder is not empty and is not a" \
      "TerraSeg engine (it has no .terraseg-engine marker), so nothing in it was run," \
      "changed or deleted. Fix: choose an empty or new folder for the engine, or remove" \
      "$venv_abs yourself if nothing in it is needed." >&2
    exit 1
  fi
fi

venv_usable() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' 2>/dev/null \
    && grep -qiE '^include-system-site-packages *= *false' "$venv/pyvenv.cfg" 2>/dev/null
}

if [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] && venv_usable; then
  echo "engine environment up to date: $venv"
  exit 0
fi

# The folder is ours from here on (marked, or absent).
needs_venv=1
if [ -d "$venv" ] && venv_usable; then
  needs_venv=0
fi
if [ "$needs_venv" = 1 ]; then
  command -v "$python" >/dev/null || { echo "install_engine: '$python' not found; set PYTHON=/path/to/python3 (>= 3.10)" >&2; exit 1; }
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "install_engine: $("$python" --version 2>&1) is too old; TerraSeg needs Python >= 3.10 (set PYTHON=...)" >&2; exit 1; }
  if [ -e "$venv/pyvenv.cfg" ] || [ -e "$venv/bin" ]; then
    echo "install_engine: $venv is broken or not isolated; recreating its environment" \
      "(the marker and any other files stay)" >&2
  fi
  if [ -d "$venv" ]; then  # only the virtual environment's own entries
    for entry in bin Scripts include Include lib Lib lib64 share etc pyvenv.cfg .torch-variant; do
      rm -rf "${venv:?}/$entry"
    done
    rm -f "$venv"/.installed-*
  fi
  mkdir -p "$venv"
  owned || write_marker created
  echo "creating isolated engine environment: $venv ($("$python" --version 2>&1))"
  "$python" -m venv "$venv"
fi

rm -f "$venv"/.installed-*
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
pip_install=("${pip[@]}" install)
if [ -n "$wheels" ]; then
  wheels=$(cd "$wheels" && pwd)
  echo "installing offline from the wheels in $wheels"
  pip_install+=(--no-index --find-links "$wheels")
fi
[ -z "$variant" ] || echo "torch build requested: $variant"
if [ -n "$variant" ] && [ -f "$venv/.torch-variant" ] \
    && [ "$(cat "$venv/.torch-variant")" != "$variant" ]; then
  echo "removing the $(cat "$venv/.torch-variant") build of torch"
  "${pip[@]}" uninstall -y torch
fi
if [ -n "${TORCH_INDEX_URL:-}" ] && [ -z "$wheels" ]; then
  torch_pin=$(grep -E '^torch([=<>!~ ]|$)' requirements/engine.txt | head -n 1)
  echo "installing ${torch_pin:-torch} from $TORCH_INDEX_URL"
  "${pip_install[@]}" --index-url "$TORCH_INDEX_URL" "${torch_pin:-torch}"
fi
echo "installing pinned engine requirements into $venv"
"${pip_install[@]}" -r requirements/engine.txt -r requirements/dev.txt
echo "installing terraseg (editable, no dependencies)"
"${pip_install[@]}" --no-deps -e .

# A cheap smoke test of what the engine cannot run without, then the stamp.
"$venv/bin/python" -c 'import torch, rasterio, fiona, shapely, sklearn, zarr, lightning, safetensors'
[ -x "$venv/bin/terraseg" ] || { echo "install_engine: $venv/bin/terraseg was not created" >&2; exit 1; }
installed=$("$venv/bin/python" -c 'import torch; print("cuda" if torch.version.cuda else "cpu")')
echo "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') ($installed build)"
if [ -n "$variant" ] && [ "$installed" != "$variant" ]; then
  echo "install_engine: warning: TORCH_VARIANT=$variant but the $installed build of torch was" \
    "installed (set TORCH_INDEX_URL or WHEELS_DIR to choose the build)" >&2
fi
echo "$installed" > "$venv/.torch-variant"
touch "$stamp"
echo "engine environment ready: $venv (terraseg: $venv/bin/terraseg)"
