"""Command ``pretrain``: a ResNet encoder pretrained on the user's own rasters.

``--task ssl`` (default) learns from the unlabelled pixels (SimCLR); ``--task classify``
from labels (a patch classifier). The flags are built from
:class:`~terraseg.protocol.pretrain_options.PretrainOptions` (defaults, help, choices and
bounds live there only) and checked before the training stack is imported. The encoder
file it writes is what ``terraseg train --encoder FILE`` takes.
"""

from __future__ import annotations

import argparse
from typing import Any

from terraseg.cli.options import _base_type, check_runtime
from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter
from terraseg.protocol.pretrain_options import PretrainOptions, pretrain_specs


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    """Every pretraining option as a flag (``--raster`` may repeat)."""
    for spec in pretrain_specs():
        kw: dict[str, Any] = {"help": spec.help, "dest": spec.name}
        base = _base_type(spec.annotation)
        if spec.required:
            kw["required"] = True
        if spec.choices:
            kw.update(choices=list(spec.choices), default=spec.default)
        elif base is bool:
            kw.update(action="store_true")
        elif spec.repeat:
            kw.update(action="append", default=[], metavar="PATH")
        else:
            kw.update(type=base, default=spec.default,
                      metavar=spec.flag.upper().replace("-", "_"))
        p.add_argument("--" + spec.flag, **kw)


def pretrain_options(a: argparse.Namespace) -> PretrainOptions:
    """Checked options from parsed arguments.

    Raises:
        ConfigError: A value no run can use (naming its flag), or an accelerator or
            strategy Lightning does not have here.
    """
    values = {s.name: getattr(a, s.name) for s in pretrain_specs()}
    values["rasters"] = tuple(values["rasters"])
    opts = PretrainOptions(**values).validate()
    check_runtime(opts)  # type: ignore[arg-type]  # has RuntimeOptions' fields
    return opts


def _run_pretrain(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    opts = pretrain_options(a)  # checked before the training stack is imported
    from terraseg.training.pretrain import run_pretrain

    return run_pretrain(opts, reporter)


def _print_pretrain(result: dict[str, Any]) -> str:
    curve = result.get("loss_curve") or []
    loss = result.get("loss")
    text = f"{loss:.4f}" if isinstance(loss, int | float) else "n/a"
    if len(curve) > 1:
        text = f"{curve[0]:.4f} -> {text}"
    device = (result.get("device") or {}).get("description", "?")
    return (f"{result['method']} ({result['task']}), {result['epochs']} epoch(s), loss "
            f"{text}, {result.get('seconds', 0):.0f} s on {device} -> "
            f"{result['encoder_file']}")


register(Command("pretrain", "pretrain a ResNet encoder on your rasters (self-supervised "
                             "SimCLR, or a patch classifier) for train --encoder",
                 _pretrain_args, _run_pretrain, printer=_print_pretrain))
