"""Encoder files: the pretrained encoder of a tile network, with where it came from.

An encoder file (``.tse``) is a safetensors file like a model file (loading it runs no
code): the weights of a :class:`~terraseg.core.models.resnet_encoder.ResNetEncoder`, keys
as in the encoder module (``conv1.weight``, ``layer1.0.conv1.weight``, ...), and in the
header's ``__metadata__`` one key, ``terraseg_encoder``, holding :class:`EncoderMeta` as
JSON: the encoder's shape (name, bands, base width), the bands and normalisation it was
pretrained on, and its provenance (:class:`Pretraining`: method, rasters, epochs, ...).

``terraseg pretrain`` writes them; ``terraseg train --encoder FILE`` reads them, and also
takes any TerraSeg model file of an encoder-decoder network (``unet_resnet34``, ...), whose
``encoder.*`` weights are taken and whose head is rebuilt for the new classes
(:func:`load_encoder`).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from terraseg.core.atomic import atomic_path
from terraseg.core.version import software_version
from terraseg.protocol.errors import ModelFileError
from terraseg.protocol.model_header import META_KEY, read_safetensors_header

ENCODER_FORMAT = "terraseg-encoder"
ENCODER_FORMAT_VERSION = 1
ENCODER_META_KEY = "terraseg_encoder"
#: Weight-key prefix of the encoder inside an encoder-decoder network.
NETWORK_PREFIX = "encoder."
_HINT = ("Use a .tse file written by 'terraseg pretrain', or a .tsm model of an "
         "encoder-decoder network (e.g. unet_resnet34) written by 'terraseg train'.")


@dataclass(frozen=True)
class Pretraining:
    """How an encoder was pretrained (recorded in the encoder file and in models trained from it).

    Attributes:
        method: ``simclr`` (self-supervised), ``classify`` (patch classifier) or ``model``
            (taken from a trained segmentation model).
        rasters: The rasters it was pretrained on (absolute paths).
        epochs: Epochs run.
        samples: Samples (tiles or patches) seen per epoch.
        labels: Labels used (classification pretraining and models), else None.
        classes: Class names of a classifier or model, else empty.
        metrics: Final figures of the pretraining (e.g. loss, multi-label F1).
        options: The pretraining options by name.
        source: The file the weights came from when taken from a model (``method=model``).
        created: UTC time written (ISO 8601).
        software: TerraSeg version that wrote it.
    """

    method: str
    rasters: tuple[str, ...] = ()
    epochs: int = 0
    samples: int = 0
    labels: str | None = None
    classes: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    created: str = ""
    software: str = ""

    @staticmethod
    def from_dict(d: Any) -> Pretraining:
        """Lenient reading of a record (unknown keys ignored)."""
        d = d if isinstance(d, Mapping) else {}
        return Pretraining(
            method=str(d.get("method") or "unknown"),
            rasters=tuple(str(r) for r in d.get("rasters") or ()),
            epochs=int(d.get("epochs") or 0), samples=int(d.get("samples") or 0),
            labels=None if d.get("labels") is None else str(d.get("labels")),
            classes=tuple(str(c) for c in d.get("classes") or ()),
            metrics=dict(d.get("metrics") or {}), options=dict(d.get("options") or {}),
            source=None if d.get("source") is None else str(d.get("source")),
            created=str(d.get("created") or ""), software=str(d.get("software") or ""))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["rasters"], d["classes"] = list(self.rasters), list(self.classes)
        d["metrics"], d["options"] = dict(self.metrics), dict(self.options)
        return d


@dataclass(frozen=True)
class EncoderMeta:
    """What an encoder file holds besides its weights.

    Attributes:
        encoder: Encoder name (``resnet18``, ``resnet34``, ``resnet50``).
        in_channels: Input channels it takes.
        base_width: Stem width (64 = the standard ResNet).
        band_names: Input channel names in order (as a model file records them).
        mean: Per-channel normalisation mean it was trained with.
        std: Per-channel normalisation standard deviation.
        pixel_size: Pixel size (x, y) of the pretraining raster in its CRS units.
        pretraining: Provenance.
    """

    encoder: str
    in_channels: int
    base_width: int
    band_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_size: tuple[float, float] | None
    pretraining: Pretraining

    @staticmethod
    def from_dict(d: Any, name: str = "encoder file") -> EncoderMeta:
        """Validated reading.

        Raises:
            ModelFileError: Not an encoder document, or missing fields.
        """
        if not isinstance(d, Mapping) or d.get("format") != ENCODER_FORMAT:
            raise ModelFileError(f"{name} is not a TerraSeg encoder file.", _HINT)
        if int(d.get("format_version") or 0) > ENCODER_FORMAT_VERSION:
            raise ModelFileError(f"{name} was written by a newer TerraSeg (encoder format "
                                 f"{d.get('format_version')}).", "Update TerraSeg.")
        try:
            ps = d.get("pixel_size")
            return EncoderMeta(
                encoder=str(d["encoder"]), in_channels=int(d["in_channels"]),
                base_width=int(d["base_width"]),
                band_names=tuple(str(b) for b in d["band_names"]),
                mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),
                pixel_size=(float(ps[0]), float(ps[1])) if ps else None,
                pretraining=Pretraining.from_dict(d.get("pretraining")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelFileError(f"{name}: encoder metadata is incomplete ({exc}).",
                                 _HINT) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON form with the format keys."""
        return {"format": ENCODER_FORMAT, "format_version": ENCODER_FORMAT_VERSION,
                "encoder": self.encoder, "in_channels": self.in_channels,
                "base_width": self.base_width, "band_names": list(self.band_names),
                "mean": list(self.mean), "std": list(self.std),
                "pixel_size": list(self.pixel_size) if self.pixel_size else None,
                "pretraining": self.pretraining.to_dict()}


@dataclass(frozen=True)
class LoadedEncoder:
    """Encoder weights (keys relative to the encoder module) and their metadata."""

    state: dict[str, torch.Tensor] = field(repr=False)
    meta: EncoderMeta
    path: str


def now_utc() -> str:
    """The current UTC time as recorded in provenance."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def save_encoder(path: str | Path, encoder: nn.Module | Mapping[str, torch.Tensor],
                 meta: EncoderMeta) -> Path:
    """Write an encoder file atomically (temp file + rename).

    Args:
        path: Target ``.tse`` file.
        encoder: The encoder module (or its state dict, keys relative to the encoder).
        meta: Its metadata; ``pretraining.created``/``software`` are filled when empty.
    """
    path = Path(path)
    state = encoder.state_dict() if isinstance(encoder, nn.Module) else dict(encoder)
    pre = meta.pretraining
    if not pre.created or not pre.software:
        pre = Pretraining(**{**asdict(pre), "created": pre.created or now_utc(),
                             "software": pre.software or software_version()})
        meta = EncoderMeta(**{**{k: getattr(meta, k) for k in meta.__dataclass_fields__},
                              "pretraining": pre})
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={ENCODER_META_KEY: json.dumps(meta.to_dict())})
    return path


def _read_tensors(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k[len(prefix):]: fh.get_tensor(k) for k in fh.keys()  # noqa: SIM118
                    if k.startswith(prefix)}
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"Cannot read the weights of {path}: {exc}.", _HINT) from exc


def read_encoder_meta(path: str | Path) -> EncoderMeta:
    """The metadata of an encoder file, or of the encoder inside a model file.

    Raises:
        ModelFileError: Missing or foreign file, or a model without a ResNet encoder.
    """
    return _meta_of(Path(path), read_safetensors_header(path))


def _meta_of(path: Path, header: dict[str, Any]) -> EncoderMeta:
    info = header.get("__metadata__") or {}
    if ENCODER_META_KEY in info:
        try:
            doc = json.loads(info[ENCODER_META_KEY])
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{path.name}: unreadable encoder metadata ({exc}).",
                                 _HINT) from None
        return EncoderMeta.from_dict(doc, path.name)
    if META_KEY in info:
        return _meta_from_model(path)
    raise ModelFileError(f"{path} is neither a TerraSeg encoder nor a model file.", _HINT)


def _meta_from_model(path: Path) -> EncoderMeta:
    """An EncoderMeta describing the encoder of a trained encoder-decoder model."""
    from terraseg.core.modelfile import read_meta  # model files import the registry
    from terraseg.core.models.encoder_decoder import CONFIGS, DEFAULT_WIDTH

    meta = read_meta(path)
    arch = meta.architecture
    if arch.name not in CONFIGS:
        raise ModelFileError(
            f"{path.name} is a '{arch.name}' model, which has no ResNet encoder to transfer.",
            "Give a model of an encoder-decoder network (unet_resnet34, fpn_resnet50, ...), "
            "or use --init-model to fine-tune a model with the same classes.")
    tr = meta.training_raster
    return EncoderMeta(
        encoder=CONFIGS[arch.name].encoder, in_channels=int(arch.in_channels),
        base_width=int(arch.params.get("base_width") or DEFAULT_WIDTH),
        band_names=tuple(meta.band_names), mean=tuple(meta.normalisation.mean),
        std=tuple(meta.normalisation.std),
        pixel_size=(float(tr.pixel_size[0]), float(tr.pixel_size[1])),
        pretraining=Pretraining(
            method="model", rasters=(tr.path,) if tr.path else (),
            epochs=int(meta.training.epochs_run or 0), labels=meta.labels.path or None,
            classes=tuple(c.name for c in meta.classes), metrics=dict(meta.metrics),
            source=str(path.resolve()), created=meta.created,
            software=meta.software.version))


def load_encoder(path: str | Path) -> LoadedEncoder:
    """Encoder weights and metadata from an encoder file or an encoder-decoder model file.

    Raises:
        ModelFileError: Unreadable or foreign file, a model without a ResNet encoder, or
            weights that don't match the recorded encoder.
    """
    path = Path(path)
    header = read_safetensors_header(path)
    meta = _meta_of(path, header)
    from_model = ENCODER_META_KEY not in (header.get("__metadata__") or {})
    state = _read_tensors(path, NETWORK_PREFIX if from_model else "")
    from terraseg.core.models.resnet_encoder import ResNetEncoder

    expected = ResNetEncoder(meta.encoder, meta.in_channels, meta.base_width).state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or wrong:
        raise ModelFileError(
            f"{path.name}: the weights don't match a {meta.encoder} encoder with "
            f"{meta.in_channels} band(s) (missing {missing[:3]}, wrong shape {wrong[:3]}).",
            "The file was edited or cut short: pretrain it again with 'terraseg pretrain'.")
    return LoadedEncoder({k: state[k] for k in expected}, meta, str(path.resolve()))
