"""streampi wire protocol v1: frames in (PUSH → PULL), results out (PUB → SUB).

The normative description is ``docs/protocol.md``; this module is its implementation and
the only code the server and the clients share. Every limit on untrusted input is explicit
(:class:`Limits`), and every violation raises :class:`~streampi.errors.ProtocolError` (or
:class:`~streampi.errors.FrameError`) carrying the stream and sequence number when they could
be read, so that the error can be answered on the right topic.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from .errors import FrameError, ProtocolError
from .preprocess import FORMATS, RAW_FORMATS, check_raw_size

VERSION = 1
ERRORS_TOPIC = "_errors"
STREAM_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: Error codes of results with ``ok: false``.
ERROR_CODES = ("bad_frame", "dropped", "overloaded", "internal")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one frame message may hold."""

    max_message_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_meta_bytes: int = 4 * 1024
    max_pixels: int = 4096 * 4096
    max_parts: int = 2


DEFAULT_LIMITS = Limits()


@dataclass
class FrameMessage:
    """One decoded frame message (pixels still in the received buffer, not copied)."""

    stream: str
    seq: int
    fmt: str
    data: Any  # bytes-like: the pixels or the JPEG
    width: int | None = None
    height: int | None = None
    ts: float | None = None
    meta: Any = None
    has_meta: bool = False
    recv: float = field(default_factory=time.time)


def _bad(msg: str, stream: str | None = None, seq: int | None = None) -> ProtocolError:
    err = ProtocolError(msg)
    err.stream, err.seq = stream, seq  # type: ignore[attr-defined]
    return err


def _nbytes(part: Any) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)


def _buffer(part: Any) -> Any:
    """The bytes-like content of a received part (a zmq.Frame or bytes)."""
    return part.buffer if hasattr(part, "buffer") else part


def valid_stream(stream: Any) -> bool:
    return isinstance(stream, str) and STREAM_RE.fullmatch(stream) is not None and not stream.startswith("_")


def decode_frame(parts: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> FrameMessage:
    """Decode and validate one frame message (a list of ZeroMQ parts)."""
    recv = time.time()
    if not 1 <= len(parts) <= limits.max_parts:
        raise _bad(f"a frame message has 1 or 2 parts, got {len(parts)}")
    bufs = [_buffer(p) for p in parts]
    total = sum(_nbytes(b) for b in bufs)
    if total > limits.max_message_bytes:
        raise _bad(f"message of {total} bytes exceeds the limit of {limits.max_message_bytes}")
    head_buf = bufs[0]
    if len(bufs) == 2 and _nbytes(head_buf) > limits.max_header_bytes:
        raise _bad(f"header part of {_nbytes(head_buf)} bytes exceeds {limits.max_header_bytes}")
    try:
        head = msgpack.unpackb(head_buf, raw=False, strict_map_key=True, max_str_len=limits.max_header_bytes,
                               max_bin_len=limits.max_message_bytes, max_array_len=1024, max_map_len=256,
                               max_ext_len=0)
    except Exception as exc:  # msgpack raises several types for bad input
        raise _bad(f"part 0 is not a msgpack map ({type(exc).__name__}: {exc})") from None
    if not isinstance(head, dict):
        raise _bad(f"part 0 must be a msgpack map, got {type(head).__name__}")

    stream = head.get("stream")
    stream = stream if valid_stream(stream) else None
    seq = head.get("seq")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None

    def fail(msg: str) -> ProtocolError:
        return _bad(msg, stream, seq)

    if head.get("v") != VERSION:
        raise fail(f"unsupported protocol version {head.get('v')!r}; this server speaks v{VERSION}")
    if stream is None:
        raise fail(f"stream must be 1-64 characters of [A-Za-z0-9._-], not starting with '_'; "
                   f"got {head.get('stream')!r}")
    if seq is None:
        raise fail(f"seq must be an integer >= 0, got {head.get('seq')!r}")
    ts = head.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float))):
        raise fail(f"ts must be a number (seconds since the epoch), got {type(ts).__name__}")
    fmt = head.get("fmt")
    if fmt not in FORMATS:
        raise fail(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    has_meta = "meta" in head
    meta = head.get("meta")
    if has_meta:
        if not isinstance(meta, dict):
            raise fail(f"meta must be a map, got {type(meta).__name__}")
        size = len(msgpack.packb(meta))
        if size > limits.max_meta_bytes:
            raise fail(f"meta of {size} bytes packed exceeds the limit of {limits.max_meta_bytes}")
    if len(bufs) == 2:
        if "data" in head:
            raise fail("data must not be in the header when the pixels come as part 1")
        data = bufs[1]
    else:
        if "data" not in head:
            raise fail("data is required when the message has one part")
        data = head["data"]
        if not isinstance(data, bytes):
            raise fail(f"data must be bin, got {type(data).__name__}")
    width, height = head.get("w"), head.get("h")
    if fmt in RAW_FORMATS:
        try:
            check_raw_size(fmt, width, height, _nbytes(memoryview(data)), limits.max_pixels)
        except FrameError as exc:
            raise fail(str(exc)) from None
    elif _nbytes(memoryview(data)) == 0:
        raise fail("empty JPEG")
    return FrameMessage(stream, seq, fmt, data, width, height, ts, meta, has_meta, recv)


def encode_frame(stream: str, seq: int, fmt: str, data: Any, width: int | None = None, height: int | None = None,
                 *, ts: float | None = None, meta: dict | None = None, two_part: bool = True) -> list[Any]:
    """Build the parts of one frame message (the inverse of :func:`decode_frame`)."""
    head: dict[str, Any] = {"v": VERSION, "stream": stream, "seq": int(seq), "fmt": fmt}
    if width is not None:
        head["w"], head["h"] = int(width), int(height)  # type: ignore[arg-type]
    if ts is not None:
        head["ts"] = float(ts)
    if meta is not None:
        head["meta"] = meta
    payload = memoryview(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data).cast("B")
    if two_part:
        return [msgpack.packb(head), payload]
    head["data"] = bytes(payload)
    return [msgpack.packb(head)]


def encode_result(result: dict) -> list[bytes]:
    """The two parts of a result message: topic, msgpack map."""
    return [result["stream"].encode(), msgpack.packb(result, use_bin_type=True)]


def decode_result(parts: Sequence[Any]) -> dict:
    if len(parts) != 2:
        raise ProtocolError(f"a result message has 2 parts, got {len(parts)}")
    return msgpack.unpackb(_buffer(parts[1]), raw=False)


def error_result(code: str, message: str, stream: str | None = None, seq: int | None = None,
                 ts: float | None = None, meta: Any = None, has_meta: bool = False) -> dict:
    out: dict[str, Any] = {"v": VERSION, "stream": stream if stream is not None else ERRORS_TOPIC, "seq": seq,
                           "ok": False, "error": {"code": code, "message": message}}
    if ts is not None:
        out["ts"] = ts
    if has_meta:
        out["meta"] = meta
    return out


def output_arrays(result: dict) -> list[np.ndarray]:
    """The ``outputs`` of a result as NumPy arrays."""
    return [np.frombuffer(o["data"], dtype=np.dtype(o["dtype"]).newbyteorder("<")).reshape(o["shape"])
            for o in result.get("outputs", [])]
