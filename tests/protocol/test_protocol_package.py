"""The shared protocol package: events, jobs, options (standard library only)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import ROOT

from terraseg.cli.options import train_options
from terraseg.cli.parser import build_parser
from terraseg.cli.registry import all_commands
from terraseg.protocol import events
from terraseg.protocol.errors import ProtocolError, ProtocolVersionError
from terraseg.protocol.jobs import COMMANDS, Job
from terraseg.protocol.options import DEFAULTS, TrainOptions, default, option_specs

PROTOCOL_DIR = ROOT / "protocol"


def test_protocol_imports_only_the_standard_library() -> None:
    allowed_prefixes = ("terraseg.protocol", "__future__")
    import sys

    for path in PROTOCOL_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                assert (name.startswith(allowed_prefixes) or top in sys.stdlib_module_names
                        ), f"{path.name} imports {name}"


@pytest.mark.parametrize("event", [
    events.Progress("train", 0.25, 30.0, "epoch 3"),
    events.Progress("predict", 1.0),
    events.Log("hello", "warning"),
    events.Metrics(3, {"train_loss": 0.5, "val_loss": None}),
    events.Result({"command": "predict", "classes": "/x/classes.tif", "window": [1, 2, 3, 4]}),
    events.Error("RasterError", "bad raster", "use another"),
])
def test_encode_decode_round_trip(event: events.Event) -> None:
    line = events.encode(event, now=1_700_000_000.123456)
    obj = json.loads(line)
    assert obj["v"] == events.PROTOCOL_VERSION and obj["time"] == 1_700_000_000.123
    assert obj["event"] == event.kind
    assert events.parse_line(line) == event


def test_values_are_made_json_safe() -> None:
    line = events.encode(events.Metrics(1, {"a": np.float32(0.5), "b": float("nan"),
                                            "c": math.inf, "d": (1, 2)}))
    assert json.loads(line)["values"] == {"a": 0.5, "b": None, "c": None, "d": [1, 2]}
    assert "NaN" not in line and "Infinity" not in line


def test_unknown_version_is_refused_with_both_versions() -> None:
    line = json.dumps({"v": 99, "event": "log", "level": "info", "message": "x"})
    with pytest.raises(ProtocolVersionError) as exc:
        events.parse_line(line)
    assert "99" in exc.value.message and "1" in exc.value.message and exc.value.hint
    with pytest.raises(ProtocolVersionError):
        events.parse_line(json.dumps({"event": "log", "message": "no version"}))


@pytest.mark.parametrize("line, kind", [
    ('{"v": 1, "event": "progress", "fraction": "half"}', ProtocolError),
    ('{"v": 1, "event": "teleport"}', ProtocolError),
    ('{"v": 1, "event": "metrics", "epoch": 1, "values": [1]}', ProtocolError),
])
def test_malformed_events(line: str, kind: type) -> None:
    with pytest.raises(kind):
        events.parse_line(line)


@pytest.mark.parametrize("line", ["", "not json", "[1, 2]", '{"no_event": 1}'])
def test_lines_that_are_not_events(line: str) -> None:
    assert events.parse_line(line) is None


def test_job_round_trip_and_argv() -> None:
    job = Job.make("predict", model=Path("m.tsm"), raster="r.tif", out_dir="o",
                   window=(1, 2, 3, 4), preview=True, overwrite=False, bands=None,
                   **{"tile-size": 256})
    assert job.to_dict() == {"command": "predict", "args": {
        "model": "m.tsm", "raster": "r.tif", "out_dir": "o", "window": [1, 2, 3, 4],
        "preview": True, "tile_size": 256}}
    assert Job.from_json(job.to_json()) == Job("predict", job.to_dict()["args"])
    assert job.to_argv() == ["predict", "--model", "m.tsm", "--raster", "r.tif", "--out-dir",
                             "o", "--window", "1,2,3,4", "--preview", "--tile-size", "256"]
    assert Job.make("info", model="m.tsm").to_argv() == ["info", "m.tsm"]


@pytest.mark.parametrize("text, words", [
    ("{", "not valid JSON"), ("[1]", "JSON object"), ('{"command": "rm"}', "Unknown worker"),
    ('{"command": "env", "args": [1]}', "'args' must be an object"),
])
def test_bad_jobs(text: str, words: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        Job.from_json(text)
    assert words in exc.value.message and exc.value.hint


def test_worker_commands_are_the_registry() -> None:
    assert set(COMMANDS) == set(all_commands())


def test_every_job_option_parses_on_the_command_line() -> None:
    """Each training option's job key is a flag of train, with the spec's default."""
    parser = build_parser()
    a = parser.parse_args(["train", "--raster", "r.tif", "--labels", "l.gpkg", "--out", "m.tsm"])
    opts = train_options(a)
    assert opts == TrainOptions.build(raster="r.tif", labels="l.gpkg", out="m.tsm")
    for spec in option_specs():
        if spec.cli and not spec.required:
            assert getattr(a, spec.name) == (list(spec.default) if spec.repeat
                                              else spec.default), spec.name
    assert default("tile_size") == DEFAULTS.network.tile_px == 128
    assert default("epochs") == 300


def test_choices_come_from_literal_annotations() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--raster", "r", "--labels", "l", "--out", "m.tsm",
                           "--optimizer", "sgd"])
    a = parser.parse_args(["train", "--raster", "r", "--labels", "l", "--out", "m.tsm",
                           "--split", "blocks", "--planes", "2,4", "--blocks", "1,1",
                           "--extra-raster", "a.tif", "--extra-raster", "twi=b.tif",
                           "--tile-size", "64"])  # a network train_options can build
    opts = train_options(a)
    assert opts.split.split == "blocks" and opts.network.planes == (2, 4)
    assert opts.data.extra_rasters == ("a.tif", "twi=b.tif") and opts.network.tile_px == 64


def test_replace_by_field_name() -> None:
    opts = TrainOptions.build(raster="r", labels="l", lr=0.1, fold=2)
    assert opts.optim.lr == 0.1 and opts.split.fold == 2
    with pytest.raises(KeyError):
        opts.replace(learning_rate=1)


def test_null_fraction_reads_as_no_progress() -> None:
    """The engine writes a NaN fraction as null; the client reads it as 0, not an error."""
    import io

    from terraseg.core.reporting import JsonLinesReporter

    out = io.StringIO()
    JsonLinesReporter(out).progress(float("nan"), "train")
    event = events.parse_line(out.getvalue())
    assert event == events.Progress("train", 0.0, None, "")
