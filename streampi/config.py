"""How frames are turned into a model's input and its outputs into results.

A :class:`ModelConfig` comes from, in increasing priority: defaults, the labels embedded
in the ``.tflite`` (an associated ``labels.txt`` in the zip appended to the flatbuffer),
a JSON sidecar next to the model (``model.json`` beside ``model.tflite``) and explicit
arguments (the ``streampi serve`` flags).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ModelError

RESIZE_MODES = ("stretch", "letterbox", "crop")
CHANNEL_ORDERS = ("rgb", "bgr")


def _per_channel(value: Any, what: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),)
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ModelError(f"{what} must be a number or a list of numbers, got {value!r}") from None
    if len(values) not in (1, 3):
        raise ModelError(f"{what} takes one value or one per channel (3), got {len(values)}")
    return values


@dataclass(frozen=True)
class ModelConfig:
    """Pre- and post-processing settings of one model.

    ``mean`` and ``std`` apply as ``(x/255 - mean)/std`` before quantization: the
    defaults (0, 1) feed [0, 1]; (0.5, 0.5) feeds [-1, 1].
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: str = "rgb"
    resize: str = "stretch"
    pad: int = 0
    labels: tuple[str, ...] | None = None
    top_k: int = 5
    #: ``{"kind": ..., ...options}`` for :func:`streampi.decoders.make_decoder` (None: auto).
    decoder: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _per_channel(self.mean, "mean"))
        object.__setattr__(self, "std", _per_channel(self.std, "std"))
        if any(s == 0 for s in self.std):
            raise ModelError("std must not be 0")
        if self.channels not in CHANNEL_ORDERS:
            raise ModelError(f"channels must be one of {CHANNEL_ORDERS}, got {self.channels!r}")
        if self.resize not in RESIZE_MODES:
            raise ModelError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if not 0 <= int(self.pad) <= 255:
            raise ModelError(f"pad must be a pixel value 0..255, got {self.pad!r}")
        if int(self.top_k) < 0:
            raise ModelError(f"top_k must be >= 0, got {self.top_k!r}")
        if self.decoder is not None:
            if not isinstance(self.decoder, dict):
                raise ModelError(f"decoder must be a JSON object like {{\"kind\": \"yolo\"}}, got {self.decoder!r}")
            if "kind" in self.decoder and not isinstance(self.decoder["kind"], str):
                raise ModelError(f"decoder kind must be a string, got {self.decoder['kind']!r}")

    def updated(self, **changes: Any) -> ModelConfig:
        """A copy with the changes that are not ``None``."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def read_labels_file(path: Path) -> tuple[str, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def embedded_labels(model_path: Path) -> tuple[str, ...] | None:
    """Labels from an associated file in the zip appended to a ``.tflite``, if any."""
    try:
        with zipfile.ZipFile(model_path) as z:
            names = [n for n in z.namelist() if n.lower().endswith(".txt")]
            preferred = [n for n in names if "label" in n.lower()] or names
            if not preferred:
                return None
            text = z.read(preferred[0]).decode("utf-8", "replace")
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    return labels or None


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def load_config(model_path: Path, **overrides: Any) -> ModelConfig:
    """Build the config of ``model_path`` (see module docstring for the order)."""
    model_path = Path(model_path)
    cfg = ModelConfig(labels=embedded_labels(model_path))
    side = sidecar_path(model_path)
    if side.is_file():
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read sidecar {side}: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError(f"sidecar {side} must hold a JSON object")
        known = {"mean", "std", "channels", "resize", "pad", "top_k", "decoder"}
        labels = data.get("labels")
        if isinstance(labels, str):
            data["labels"] = read_labels_file(side.parent / labels)
        elif isinstance(labels, list):
            data["labels"] = tuple(str(x) for x in labels)
        extra = {k: v for k, v in data.items() if k not in known | {"labels"}}
        cfg = cfg.updated(**{k: v for k, v in data.items() if k in known | {"labels"}}, extra=extra)
    labels_file = overrides.pop("labels_file", None)
    if labels_file is not None:
        overrides["labels"] = read_labels_file(Path(labels_file))
    decoder = overrides.pop("decoder", None)
    if decoder:  # command-line decoder settings: over the sidecar's for the same kind, else afresh
        base = dict(cfg.decoder or {})
        if "kind" in decoder and decoder["kind"] != base.get("kind"):
            base = {}
        overrides["decoder"] = {**base, **decoder}
    return cfg.updated(**overrides)
