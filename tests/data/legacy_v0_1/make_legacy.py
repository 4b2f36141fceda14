"""Build legacy (v0.1.0 writer) model files + expected predictions for the compatibility test."""
# Historical: ran against TerraSeg 0.1.0 (commit bfb7294); kept as the record of how the files were made.
import shutil
import sys
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, "/work/main/tests")
from synthetic import make_scene

from terraseg.cli.main import main
from terraseg.training.train import TrainConfig, run_train

out = Path("/tmp/legacy/out"); shutil.rmtree(out, ignore_errors=True); out.mkdir()
scene = make_scene(out, size=64, seed=3)
common = dict(raster=str(scene.raster), labels=str(scene.labels), class_field="klass",
              epochs=2, patience=5, seed=1, cache_dir=str(out / "cache"), samples_per_epoch=64,
              accelerator="cpu")
run_train(TrainConfig(out=str(out / "legacy_patch.tsm"), patch_px=25, block_px=5,
                      planes=(4, 4, 4), blocks=(1, 1, 1), batch_size=16, **common))
run_train(TrainConfig(out=str(out / "legacy_unet.tsm"), model="unet_small", tile_px=32,
                      base_width=4, batch_size=4, **common))
for name in ("legacy_patch", "legacy_unet"):
    rc = main(["--quiet", "predict", "--model", str(out / f"{name}.tsm"), "--raster", str(scene.raster),
               "--out-dir", str(out / f"pred_{name}")])
    assert rc == 0
    with rasterio.open(out / f"pred_{name}" / "probability.tif") as ds:
        np.save(out / f"{name}.probability.npy", ds.read())
    with rasterio.open(out / f"pred_{name}" / "classes.tif") as ds:
        np.save(out / f"{name}.classes.npy", ds.read(1))
print("ok")
