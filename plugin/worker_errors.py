"""How a worker job fails, as the plugin reports it.

A job fails with its ``error`` event (the engine's error type, message and hint), or on the
plugin's side: no engine (``EngineMissing``), an engine that cannot start
(``EngineStartError``), one that speaks an unknown protocol version
(``ProtocolVersionError``), or a worker that ended without its final event
(``WorkerCrashed``, with its exit status and the last lines of its stderr).
:class:`WorkerError` carries any of these; Processing algorithms raise it, the panel shows
its fields through :class:`~terraseg.plugin.worker_job.WorkerJob`'s ``error`` signal.

The engine's messages name command-line flags (``--bands``); the panel has no flags, so
:func:`panel_wording` rewrites them as the panel's own controls (:data:`PANEL_CONTROLS`:
"the Bands table in Data & task").
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable

from ..protocol.errors import ProtocolVersionError

CRASH_HINT = ("The engine process ended without a result. If it was killed, the machine "
              "may have run out of memory: try a smaller tile or batch size. Otherwise copy "
              "the log (TerraSeg settings > Copy diagnostics) into a bug report.")
ENGINE_MISSING_HINT = "Open TerraSeg settings and click 'Set up engine'."
START_HINT = "Set up the engine again (TerraSeg settings)."

#: Any command (the default wording of a flag in :data:`PANEL_CONTROLS`).
ANY = "*"

#: The panel control behind each engine flag (without dashes), per worker command where
#: the same flag means different things (``--model``: the architecture for ``train``, the
#: model file elsewhere); :data:`ANY` for every other command.
PANEL_CONTROLS: dict[str, dict[str, str]] = {
    # Data & task, Labels, Terrain inputs
    "raster": {ANY: "the Raster in Data & task"},
    "bands": {ANY: "the Bands table in Data & task"},
    "nodata": {ANY: "the Nodata value in Data & task"},
    "class-map": {"pseudo-label": "the Class mapping of the Coarse map in Train",
                  ANY: "the Classes table in Data & task"},
    "labels": {"pseudo-label": "the Coarse map in Train > Coarse map as labels",
               ANY: "the label layer in Labels"},
    "class-field": {"pseudo-label": "the Class field of the Coarse map in Train",
                    ANY: "the label layer's 'class' field (Labels)"},
    "dem": {ANY: "the DEM in Terrain inputs"},
    "slope-from-dem": {ANY: "'Add slope derived from the DEM' in Terrain inputs"},
    "extra-raster": {ANY: "the Slope raster in Terrain inputs"},
    # Train
    "model": {"train": "the Architecture in Train",
              ANY: "the model file chosen with Load model… in Data & task"},
    "init-model": {ANY: "the last model, which Train starts from unless 'From scratch' "
                        "is ticked"},
    "out": {"train": "the new model file (saved in 'models' next to the project)",
            "pretrain": "the new encoder file (saved in 'encoders' next to the project)",
            ANY: "the file chosen for the export"},
    "epochs": {"pretrain": "Pretraining epochs in Train > Pretrained encoder",
               ANY: "Epochs (max) in Train"},
    "tile-size": {"train": "the Tile size in Train",
                  ANY: "the processing tile size (the panel uses the model's; Processing's "
                       "Predict sets it)"},
    "patch-size": {ANY: "the Patch size in Train"},
    "block-size": {ANY: "the Block size in Train"},
    "stride": {ANY: "the Stride in Train > Advanced"},
    "optimizer": {ANY: "the Recipe in Train (it sets the optimiser; no control of its own)"},
    "weight-decay": {ANY: "the Recipe in Train (it sets the weight decay; no control of "
                          "its own)"},
    "loss": {ANY: "the Recipe in Train (it sets the loss; no control of its own)"},
    "blocks": {ANY: "Blocks per stage in Train > Advanced"},
    "planes": {ANY: "Channels per stage in Train > Advanced"},
    "patience": {ANY: "Early-stopping patience in Train > Advanced"},
    "lr": {ANY: "the Learning rate in Train > Advanced"},
    "batch-size": {ANY: "the Batch size in Train > Advanced"},
    "samples-per-epoch": {ANY: "Samples per epoch in Train > Advanced"},
    "val-fraction": {ANY: "the Validation fraction in Train > Advanced"},
    "split-from": {ANY: "the last model's validation split (kept when retraining and by "
                        "the Quick map)"},
    "augment": {ANY: "Augmentation in Train > Advanced"},
    "accelerator": {ANY: "the Device in Train > Advanced"},
    "cache-dir": {ANY: "the Cache folder in Train > Advanced"},
    "pseudo-labels": {ANY: "'Densify labels with a random forest first' (or a Coarse map) "
                           "in Train"},
    "pseudo-source": {ANY: "the Coarse map in Train > Coarse map as labels"},
    "pseudo-class-field": {ANY: "the Class field of the Coarse map in Train"},
    "pseudo-class-map": {ANY: "the Class mapping of the Coarse map in Train"},
    "encoder": {"pretrain": "the Architecture in Train (its ResNet is the encoder pretrained)",
                ANY: "the Encoder file in Train > Pretrained encoder"},
    "freeze-epochs": {ANY: "'Frozen epochs' in Train > Pretrained encoder"},
    "encoder-lr": {ANY: "'Encoder LR ×' in Train > Pretrained encoder"},
    "task": {ANY: "'Pretrain on this raster' in Train > Pretrained encoder (self-supervised)"},
    "base-width": {ANY: "the Recipe in Train (it sets the base width; no control of its own)"},
    # Predict
    "threshold": {ANY: "the Own threshold in Predict"},
    "opening": {ANY: "the Opening radius in Predict's clean-up"},
    "closing": {ANY: "the Closing radius in Predict's clean-up"},
    "min-area": {"vectorise": "the Minimum area in Export",
                 ANY: "the Minimum region in Predict's clean-up"},
    "window": {ANY: "Predict's Current map extent"},
    "extent-layer": {ANY: "Predict's Extent of layer"},
    "out-dir": {"review": "the review folder (Review labels makes a new one next to the "
                          "models folder)",
                "change": "the change folder (Map change makes a new one next to the models "
                          "folder)",
                ANY: "the results folder (Predict makes a new one next to the model)"},
    # Export
    "classes": {ANY: "the class map of the last prediction"},
    "out-csv": {ANY: "the CSV chosen for Area statistics"},
    "out-zones": {ANY: "the zones GeoPackage beside the Area statistics CSV"},
    "zones": {ANY: "the Zones layer in Export"},
    "zone-field": {ANY: "the Zone name field in Export"},
    "overwrite": {ANY: "'Yes' when the panel asks to replace files"},
    # Evaluate
    "reference": {ANY: "the reference layer of Evaluate"},
    "hierarchy": {ANY: "the Class hierarchy in Evaluate"},
    "level": {ANY: "the level of 'Also map level' in Predict"},
    # Review labels
    "k": {"review": "the Folds in Review labels",
          ANY: "the engine's 'k' setting (not in the panel)"},
    "ranking": {ANY: "the Ranking in Review labels"},
    "top": {ANY: "Polygons listed in Review labels"},
    "scorer": {ANY: "'Scored by' in Review labels"},
    # Change
    "raster-a": {ANY: "the Raster in Data & task (the first date)"},
    "raster-b": {ANY: "the Second date in Change"},
    "classes-a": {ANY: "'Classes, first date' in Change"},
    "classes-b": {ANY: "'Classes, second date' in Change"},
    "max-shift": {ANY: "the Largest shift in Change"},
    "correct-shift": {ANY: "'Correct the shift' in Change"},
    "border": {ANY: "the Border band in Change"},
    "transition": {ANY: "the Transitions of interest in Change"},
}

# "--flag" with the value that follows it, when it is one (a number, a quoted text, a
# list or pair such as red=1,nir=4 or model:loss, a file name, a placeholder like PATH)
_FLAG = re.compile(
    r"--(?P<flag>[a-z][a-z0-9-]*)"
    r"(?:[ =](?P<value>'[^']*'|-?\d[^\s;)]*|[\w.-]+[=,:/][^\s;)']*"
    r"|[\w-]+\.[a-z]{2,4}\b|[A-Z][A-Z_]+\b|[a-z]+_[a-z_]+\b))?")
# phrases that only make sense on a command line (the case of the first letter is kept)
_PHRASES = ((re.compile(r"\b[Pp]ass --overwrite to replace"), "answer 'Yes' to replace"),
            (re.compile(r"\b(?:[Pp]ass|[Gg]ive) (?=--)"), "set "),
            (re.compile(r"\b[Ll]eave out (?=--)"), "clear "),
            (re.compile(r"\banother (?=--)"), ""),
            (re.compile(r" on the command line\b"), ""))


def _same_case(words: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        first = match.group(0)[:1]
        return words[:1].upper() + words[1:] if first.isupper() else words
    return replace


def control_wording(flag: str, command: str | None = None) -> str:
    """How the panel names the control behind an engine flag.

    Args:
        flag: The flag without dashes (``bands``, ``min-area``).
        command: The worker command whose message it is (``train``, ``predict``, ...).

    Returns:
        The control's words from :data:`PANEL_CONTROLS`; for a flag the panel does not
        offer, words that say where it is set instead.
    """
    words = PANEL_CONTROLS.get(flag)
    if words:
        return words.get(command or ANY) or words.get(ANY) or next(iter(words.values()))
    return f"the engine's '{flag.replace('-', ' ')}' setting (not in the panel)"


def panel_wording(text: str, command: str | None = None) -> str:
    """An engine message or hint in the panel's words: every ``--flag`` becomes the control.

    ``"Pass --bands with 4 band numbers"`` becomes ``"set the Bands table in Data & task
    with 4 band numbers"``; a flag's value stays (``the Minimum region in Predict's
    clean-up = 500``).

    Args:
        text: The engine's message or hint.
        command: The worker command it came from (chooses between meanings of a flag).
    """
    for pattern, words in _PHRASES:
        text = pattern.sub(_same_case(words), text)

    def control(match: re.Match[str]) -> str:
        words = control_wording(match["flag"], command)
        value = match["value"]
        if not value:
            return words
        stripped = value.rstrip(".,")
        return f"{words} = {stripped}{value[len(stripped):]}"

    return _FLAG.sub(control, text)


class WorkerError(Exception):
    """A worker job failed (an ``error`` event, a crash, or cancellation).

    Processing algorithms turn it into ``QgsProcessingException(str(error))``.

    Args:
        type: Error type (``RasterError``, ``LabelError``, ``CancelledError``,
            ``WorkerCrashed``, ``EngineMissing``, ``ProtocolVersionError``, ...).
        message: What went wrong.
        hint: How to fix it.
        exit_code: The worker's exit status when known (negative: killed by that signal).
        stderr_tail: The last lines the worker wrote to stderr.
    """

    def __init__(self, type: str, message: str, hint: str = "",  # noqa: A002 - protocol name
                 exit_code: int | None = None, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        text = f"{self.type}: {self.message}" if self.type else self.message
        return f"{text} Fix: {self.hint}" if self.hint else text


def engine_missing() -> WorkerError:
    """The error for a job started without an engine (``EngineMissing``)."""
    return WorkerError("EngineMissing", "No TerraSeg engine was found.", ENGINE_MISSING_HINT)


def start_error(program: str, why: str) -> WorkerError:
    """The error for an engine program that cannot be started (``EngineStartError``).

    Args:
        program: The ``terraseg`` command.
        why: The operating system's reason.
    """
    return WorkerError("EngineStartError", f"Cannot start the engine {program}: {why}",
                       START_HINT)


def version_error(exc: ProtocolVersionError) -> WorkerError:
    """The error for a worker that speaks an unknown protocol version.

    Args:
        exc: The protocol's refusal (its message names both versions).
    """
    return WorkerError(exc.kind, exc.message, exc.hint)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(exit_code: int | None, crashed: bool = False) -> str:
    """Words for how a worker process ended.

    Args:
        exit_code: Exit status; for ``crashed`` processes the signal number (QProcess) or
            a negative signal number (subprocess).
        crashed: Whether it was ended by a signal.

    Returns:
        For example ``"killed by signal 9 (SIGKILL)"`` or ``"exit code 3"``.
    """
    if exit_code is None:
        return "unknown exit status"
    if crashed or exit_code < 0:
        signum = abs(exit_code)
        if sys.platform != "win32" and signum:
            return f"killed by signal {signum} ({_signal_name(signum)})"
        return f"crashed (exit code {exit_code})"
    return f"exit code {exit_code}"


def crash_error(exit_code: int | None, crashed: bool, stderr_tail: str) -> WorkerError:
    """The error for a worker that ended without its final event.

    Args:
        exit_code: Exit status (see :func:`describe_exit`).
        crashed: Whether it was ended by a signal.
        stderr_tail: Its last stderr lines.

    Returns:
        A ``WorkerCrashed`` error.
    """
    last = "\n".join(stderr_tail.strip().splitlines()[-15:])
    message = f"The engine worker stopped unexpectedly ({describe_exit(exit_code, crashed)})."
    if last:
        message += f" Last output:\n{last}"
    code = -abs(exit_code) if crashed and exit_code else exit_code
    return WorkerError("WorkerCrashed", message, CRASH_HINT, code, stderr_tail)
