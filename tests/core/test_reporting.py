"""Tests for terraseg.core.reporting: JSON-lines events, ETA, cancellation, console output."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest

from terraseg.core import reporting as protocol
from terraseg.core.reporting import (
    PROTOCOL_VERSION,
    ConsoleReporter,
    JsonLinesReporter,
    Reporter,
)
from terraseg.protocol.errors import CancelledError


class FakeTime:
    """Stands in for the ``time`` module inside core.protocol."""

    def __init__(self, mono: float = 1000.0, wall: float = 1_700_000_000.12345) -> None:
        self.mono, self.wall = mono, wall

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(protocol, "time", fake)
    return fake


def strict_loads(line: str) -> dict:
    def no_constants(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name} in {line!r}")

    return json.loads(line, parse_constant=no_constants)


def events(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [strict_loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- JSON lines


def test_json_lines_events_and_fields(clock: FakeTime) -> None:
    out = io.StringIO()
    rep = JsonLinesReporter(out)
    rep.progress(0.0, "train", "starting")
    clock.mono += 10.0
    rep.progress(0.25, "train")
    rep.log("hello")
    rep.log("careful", "warning")
    rep.metrics(3, {"train_loss": np.float32(0.5), "val_loss": float("nan"),
                    "val_acc": np.float64("inf"), "n": np.int64(7)})
    rep.result({"model": "m.tsm", "window": (1, 2, 3, 4),
                "shares": {"a": np.float32(0.25), "b": float("-inf")}, "ok": np.bool_(True)})
    rep.error("RasterError", "bad raster", "fix it")
    ev = events(out)
    assert len(ev) == 7
    for e in ev:
        assert e["v"] == PROTOCOL_VERSION == 1
        assert e["time"] == 1_700_000_000.123
    strip = [{k: v for k, v in e.items() if k not in ("v", "time")} for e in ev]
    assert strip[0] == {"event": "progress", "stage": "train", "fraction": 0.0, "eta_s": None,
                        "message": "starting"}
    # ETA: 10 s for 25 % -> 30 s left
    assert strip[1] == {"event": "progress", "stage": "train", "fraction": 0.25, "eta_s": 30.0,
                        "message": ""}
    assert strip[2] == {"event": "log", "level": "info", "message": "hello"}
    assert strip[3] == {"event": "log", "level": "warning", "message": "careful"}
    assert strip[4] == {"event": "metrics", "epoch": 3,
                        "values": {"train_loss": 0.5, "val_loss": None, "val_acc": None, "n": 7}}
    assert strip[5] == {"event": "result", "model": "m.tsm", "window": [1, 2, 3, 4],
                        "shares": {"a": 0.25, "b": None}, "ok": True}
    assert strip[6] == {"event": "error", "type": "RasterError", "message": "bad raster",
                        "hint": "fix it"}
    assert "NaN" not in out.getvalue() and "Infinity" not in out.getvalue()


def test_progress_eta_per_stage_and_rounding(clock: FakeTime) -> None:
    out = io.StringIO()
    rep = JsonLinesReporter(out)
    rep.progress(0.0, "prepare")
    clock.mono += 0.4
    rep.progress(0.5, "prepare")  # < 0.5 s since stage start: no ETA yet
    clock.mono += 2.6
    rep.progress(0.123456, "prepare")  # 3 s for 12.3456 % -> 21.3 s left
    rep.progress(0.5, "predict")  # new stage starts now: no ETA
    clock.mono += 4.0
    rep.progress(0.8, "predict")  # 4 s for 80 % -> 1 s left
    rep.progress(1.0, "predict")  # finished: no ETA
    ev = events(out)
    assert [e["eta_s"] for e in ev] == [None, None, 21.3, None, 1.0, None]
    assert [e["fraction"] for e in ev] == [0.0, 0.5, 0.1235, 0.5, 0.8, 1.0]
    assert [e["stage"] for e in ev] == ["prepare"] * 3 + ["predict"] * 3


def test_progress_nan_fraction_is_null(clock: FakeTime) -> None:
    out = io.StringIO()
    JsonLinesReporter(out).progress(float("nan"), "train")
    assert events(out)[0]["fraction"] is None


def test_json_lines_default_stream_is_stdout(capsys: pytest.CaptureFixture) -> None:
    JsonLinesReporter().log("to stdout")
    cap = capsys.readouterr()
    assert json.loads(cap.out)["message"] == "to stdout" and cap.err == ""


def test_json_lines_threads_do_not_interleave() -> None:
    out = io.StringIO()
    rep = JsonLinesReporter(out)

    def work(i: int) -> None:
        for j in range(200):
            rep.log(f"{i}-{j}" + "x" * 50)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ev = events(out)
    assert len(ev) == 800
    assert sorted(e["message"] for e in ev) == sorted(
        f"{i}-{j}" + "x" * 50 for i in range(4) for j in range(200))


# --------------------------------------------------------------------------- cancel


def test_cancel_and_check_cancelled() -> None:
    rep = Reporter()
    assert not rep.cancelled
    rep.check_cancelled()  # no-op
    rep.cancel()
    assert rep.cancelled
    with pytest.raises(CancelledError) as exc:
        rep.check_cancelled()
    assert exc.value.exit_code == 130 and exc.value.kind == "CancelledError"
    assert "no output was written" in exc.value.message


def test_progress_after_cancel_emits_then_raises() -> None:
    out = io.StringIO()
    rep = JsonLinesReporter(out)
    rep.progress(0.1, "predict")
    t = threading.Thread(target=rep.cancel)  # cancel from another thread
    t.start()
    t.join()
    with pytest.raises(CancelledError):
        rep.progress(0.2, "predict")
    assert [e["fraction"] for e in events(out)] == [0.1, 0.2]
    rep.log("still logs")  # logging does not raise
    assert events(out)[-1]["message"] == "still logs"


def test_base_reporter_emits_nothing(capsys: pytest.CaptureFixture) -> None:
    rep = Reporter()
    rep.progress(0.5, "x")
    rep.log("y")
    rep.metrics(1, {"a": 1.0})
    rep.result({"r": 1})
    rep.error("E", "m", "h")
    assert capsys.readouterr() == ("", "")


# --------------------------------------------------------------------------- console


def test_console_output(clock: FakeTime) -> None:
    err = io.StringIO()
    rep = ConsoleReporter(err)
    rep.progress(0.0, "train", "go")
    clock.mono += 1.0
    rep.progress(0.1, "train")  # throttled: < 2 s since the last printed line
    clock.mono += 1.5
    rep.progress(0.5, "train", "half")  # 2.5 s in at 50 % -> ETA 2.5 s (printed as 2)
    clock.mono += 0.1
    rep.progress(1.0, "train")  # completion is never throttled
    rep.progress(0.2, "predict")  # other stage: own throttle
    rep.log("a log line")
    rep.metrics(4, {"train_loss": 0.12345, "val_acc": np.float64(0.5), "note": "text"})
    rep.error("LabelError", "no labels", "draw some")
    rep.error("OutputError", "exists")
    rep.result({"model": "x"})  # not printed
    lines = err.getvalue().splitlines()
    assert lines == [
        "[train]   0.0% go",
        "[train]  50.0%, ETA 2 s half",
        "[train] 100.0%",
        "[predict]  20.0%",
        "a log line",
        "epoch 4: train_loss=0.1235, val_acc=0.5000",
        "error: no labels",
        "  fix: draw some",
        "error: exists",
    ]


def test_console_quiet(clock: FakeTime) -> None:
    err = io.StringIO()
    rep = ConsoleReporter(err, quiet=True)
    rep.progress(0.5, "train")
    rep.progress(1.0, "train")
    rep.log("debug detail", "debug")
    rep.log("info line")
    rep.log("warn line", "warning")
    assert err.getvalue().splitlines() == ["info line", "warn line"]


def test_console_default_stream_is_stderr(capsys: pytest.CaptureFixture) -> None:
    ConsoleReporter().log("to stderr")
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == "to stderr\n"
