"""Model outputs → result fields: now :mod:`streampi.decoders` (this module keeps old imports working)."""

from __future__ import annotations

from collections.abc import Sequence

from .config import ModelConfig
from .decoders import Decoder, make_decoder
from .model import TensorSpec

__all__ = ["Decoder", "Postprocessor", "make_decoder"]


def Postprocessor(outputs: Sequence[TensorSpec], labels: Sequence[str] | None = None, top_k: int = 5,  # noqa: N802
                  config: ModelConfig | None = None) -> Decoder:
    """The decoder for ``outputs`` under ``config`` (or labels and ``top_k`` alone, which
    ignores a sidecar's ``"decoder"``): prefer ``make_decoder(outputs, config)``."""
    if config is None:
        config = ModelConfig(labels=tuple(labels) if labels else None, top_k=int(top_k))
    return make_decoder(outputs, config)
