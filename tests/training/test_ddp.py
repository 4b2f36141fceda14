"""Distributed data-parallel training on CPU (gloo): ``--devices 2 --strategy ddp``.

Lightning's DDP launcher re-runs the ``terraseg train`` command line for rank 1, so this
also checks that the command line is safe to run twice at once (rank 0 alone saves).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess

import pytest
import torch.distributed
from helpers.paths import TERRASEG
from helpers.synthetic import make_scene

from terraseg.core.modelfile import load_model, read_metadata

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available()
                                     and torch.distributed.is_gloo_available()),
                                reason="this torch build has no distributed/gloo support")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two training processes: ~15-30 s on 2 CPU cores
def test_ddp_two_cpu_processes(tmp_path):
    scene = make_scene(tmp_path)
    model = tmp_path / "ddp.tsm"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "TERRASEG_CACHE": str(tmp_path / "default_cache")}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_JOB_ID",
                "SLURM_NTASKS"):  # never let a surrounding job's settings leak in
        env.pop(var, None)
    proc = subprocess.run(
        [*TERRASEG, "train", "--raster", str(scene.raster), "--labels", str(scene.labels),
         "--class-field", "klass", "--out", str(model), "--accelerator", "cpu",
         "--devices", "2", "--strategy", "ddp", "--epochs", "2", "--patch-size", "23",
         "--blocks", "1,1,1", "--samples-per-epoch", "256",
         "--cache-dir", str(tmp_path / "cache")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    err = proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{err}"
    assert "Traceback" not in err, err

    # the log names both devices / processes
    assert re.search(r"^training on CPU .*x2$", err, re.M), err
    assert "MEMBER: 1/2" in err and "MEMBER: 2/2" in err, err
    assert "distributed_backend=gloo" in err, err
    assert re.search(r"^epoch 2: ", err, re.M), err

    # rank 0 alone reports and saves one loadable model
    assert proc.stdout.splitlines().count(f"model: {model}") == 1, proc.stdout
    loaded = load_model(model)
    assert loaded.meta.training.device["count"] == 2 and loaded.meta.training.epochs_run == 2
    meta = read_metadata(model)
    assert meta["training"]["device"]["count"] == 2
    assert meta["training"]["options"]["strategy"] == "ddp"
    assert meta["training"]["epochs_run"] == 2
    assert [c["name"] for c in meta["classes"]] == ["sealed", "unsealed"]
    assert not list(tmp_path.glob(".*.partial"))
    json.dumps(meta)  # metadata stays plain JSON
