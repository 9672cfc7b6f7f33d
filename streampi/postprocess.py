"""Model outputs → result fields: now :mod:`streampi.decoders` (kept for old imports)."""

from __future__ import annotations

from .decoders import Decoder, make_decoder

__all__ = ["Decoder", "make_decoder"]
