#!/usr/bin/env bash
# Loss / architecture comparison on the real Sentinel-2 landslide chips (`make landslide-study`).
#
# ../shared/data/landslide_s2_rgbn_chittagong: 64 overlapping 256 px chips (R, G, B, NIR at
# 10 m, EPSG:4326) with sparse labels 1 = no landslide, 2 = landslide, 0 = unlabelled.
# The chips become one image mosaic and one label mosaic (VRTs); `terraseg compare` trains
# every architecture/loss pair on one spatial split (128 px blocks dealt to train /
# validation / test) and adds a random-forest pixel classifier on the same split.
# The result is docs/landslide_comparison.md's table (study_output/landslides/compare.md).
# Overrides: LS_DATA, LS_OUT, LS_EPOCHS, LS_K (k spatial folds instead of one split).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
terraseg="${ENGINE_VENV:-.venv-engine}/bin/terraseg"
data="${LS_DATA:-../shared/data/landslide_s2_rgbn_chittagong}"
out="${LS_OUT:-study_output/landslides}"
[ -d "$data/images" ] || { echo "landslide-study: $data/images is missing" >&2; exit 1; }
mkdir -p "$out"
"$terraseg" mosaic --inputs "$data/images" --out "$out/images.vrt" --overwrite --quiet
"$terraseg" mosaic --inputs "$data/labels" --out "$out/labels.vrt" --overwrite --quiet
runs="unet_small:ce;unet_small:focal;unet_small:iou;unet_small:dice;unet_small:tversky"
runs+=";unet_small:lovasz;unet_small:focal+iou"
runs+=";unet_residual:focal+iou;unet_se:focal+iou;unet_cbam:focal+iou;unet_multires:focal+iou"
split=(--split blocks --split-block-size 128 --val-fraction 0.2 --test-fraction 0.2)
[ -n "${LS_K:-}" ] && split+=(--k "$LS_K")
"$terraseg" compare --raster "$out/images.vrt" --labels "$out/labels.vrt" \
  --class-map "2=landslide,1=no_landslide" --positive-class landslide --runs "$runs" \
  --base-width 16 --tile-size 64 --samples-per-epoch 512 --batch-size 16 \
  --epochs "${LS_EPOCHS:-40}" --patience 8 --seed 0 "${split[@]}" \
  --out-dir "$out" --overwrite
cat "$out/compare.md"
