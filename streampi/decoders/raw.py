"""``raw``: the output tensors themselves (the ``outputs`` field), for models no decoder fits."""

from __future__ import annotations

from typing import Any

from .base import Decoder, Options, raw_outputs


class RawDecoder(Decoder):
    kind = "raw"

    def __init__(self, specs, labels, options: Options) -> None:
        super().__init__(specs, labels, options)
        self.include_raw = False  # decode() already returns them

    def decode(self, outputs, i: int, transform) -> dict[str, Any]:
        return {"outputs": raw_outputs(self.specs, outputs, i)}
