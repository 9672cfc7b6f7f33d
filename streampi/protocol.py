"""streampi wire protocol: frames in, results out (PUB → SUB).

Frames come in two ways: v1, PUSH → PULL (any ZeroMQ client, no flow control), and v1.1,
DEALER → ROUTER with credit-based flow control (the same frame messages, behind a one-part
kind prefix, plus ``hello`` and ``credit`` messages; see :func:`encode_credit`).

The normative description is ``docs/protocol.md``; this module is its implementation and
the only code the server and the clients share. Every limit on untrusted input is explicit
(:class:`Limits`), and every violation raises :class:`~streampi.errors.ProtocolError` (or
:class:`~streampi.errors.FrameError`) carrying the stream and sequence number when they could
be read, so that the error can be answered on the right topic.
"""

from __future__ import annotations

import math
import re
import reprlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

import msgspec
import numpy as np

from .errors import FrameError, ProtocolError
from .formats import FORMATS, RAW_FORMATS, check_raw_size

VERSION = 1
ERRORS_TOPIC = "_errors"
STREAM_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: UTF-8 bytes of the ``message`` of an error answer at most: untrusted values are quoted
#: through :func:`bounded_repr` and the whole message is cut to this, so an error answer to a
#: frame without ``meta`` stays under 1 KiB whatever the frame held.
MAX_ERROR_MESSAGE_BYTES = 512

#: Error codes of results with ``ok: false``.
ERROR_CODES = ("bad_frame", "dropped", "overloaded", "internal", "worker_lost", "unavailable", "shutdown")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one frame message may hold; all enforced before the expensive work.

    The header is decoded by a typed decoder (:data:`_HEADER_DECODER`): it builds at most
    one Python object per known field, skips unknown keys without building anything, and
    hands ``meta`` over as raw bytes, so the objects a header can cost are bounded by the
    fixed fields plus ``max_meta_bytes`` (a packed object takes at least one byte). Nesting
    anywhere in the header is bounded by the decoder's recursion guard, and in ``meta`` by
    ``max_meta_depth``.
    """

    max_message_bytes: int = field(default=32 * 1024 * 1024, metadata={"help": (
        "the whole message, all parts together; also ZMQ_MAXMSGSIZE of the frame socket (ZeroMQ drops a "
        "connection that sends one larger part, unanswered)")})
    max_header_bytes: int = field(default=16 * 1024, metadata={"help": (
        "part 0 less the data payload of a one-part message (a two-part header is measured before decoding)")})
    max_meta_bytes: int = field(default=4 * 1024, metadata={"help": "meta as packed by the producer"})
    max_meta_depth: int = field(default=16, metadata={"help": "containers nested in meta (meta itself is 1)"})
    max_pixels: int = field(default=4096 * 4096, metadata={"help": (
        "width*height of a raw frame, and of what a JPEG header claims")})
    max_parts: int = field(default=2, metadata={"help": "ZeroMQ parts of one message (1 or 2)"})

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"limit {f.name} must be an integer >= 1, got {v!r}")
        if self.max_parts > 2:
            raise ValueError(f"limit max_parts must be 1 or 2 (the protocol has no third part), got {self.max_parts}")
        if self.max_header_bytes > self.max_message_bytes:
            raise ValueError("limit max_header_bytes must not exceed max_message_bytes")


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
    shm_slot: int | None = None  # the shared-memory slot holding the pixels, released with the answer


_NO_META = msgspec.Raw(b"")


class _Header(msgspec.Struct):
    """Part 0 as the typed decoder reads it: a wrong type fails here, before any Python
    object is built for the rest; ``data`` is a view into the received buffer (no copy)."""

    v: int
    stream: str
    seq: int
    fmt: str
    w: int | None = None
    h: int | None = None
    ts: float | None = None
    data: memoryview | None = None
    meta: msgspec.Raw = _NO_META
    shm: tuple[int, int] | None = None  # (slot, ticket): the pixels are in the producer's shared-memory ring


class _LooseHeader(msgspec.Struct):
    """Part 0 with every field left undecoded: after a typed decoding failed, where to answer."""

    v: msgspec.Raw = _NO_META
    stream: msgspec.Raw = _NO_META
    seq: msgspec.Raw = _NO_META


_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)
_LOOSE_DECODER = msgspec.msgpack.Decoder(_LooseHeader)
_STR_DECODER = msgspec.msgpack.Decoder(str)
_INT_DECODER = msgspec.msgpack.Decoder(int)
_META_DECODER = msgspec.msgpack.Decoder(dict[str, Any])
_RESULT_DECODER = msgspec.msgpack.Decoder()
_DECODE_ERRORS = (msgspec.MsgspecError, RecursionError, ValueError, TypeError, OverflowError)


def _builtin(obj: Any) -> Any:
    """A subclass of a built-in scalar (NumPy's float64 is a float) as that scalar: msgpack
    packs them, msgspec asks. Anything else cannot be packed."""
    for kind in (int, float, str, bytes):
        if isinstance(obj, kind):
            return kind(obj)
    raise TypeError(f"can not serialize {type(obj).__name__!r} object")


#: Every message is packed by msgspec, byte for byte as msgpack-python packs it (str as str,
#: bytes as bin, the smallest int and float64), so that the clients need no second codec.
_pack = msgspec.msgpack.Encoder(enc_hook=_builtin).encode


def pack(obj: Any) -> bytes:
    """``obj`` packed as every streampi message is (the control socket's replies use it too)."""
    return _pack(obj)

_short_repr = reprlib.Repr()
_short_repr.maxstring = _short_repr.maxother = 40
_short_repr.maxlevel = 2


def bounded_repr(value: Any) -> str:
    """``repr`` of an untrusted value, at most about 50 characters whatever it holds."""
    return _short_repr.repr(value)


def _clip(text: str, limit: int = 160) -> str:
    """A library's error text (which may quote parts of the input), cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


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


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of lists/maps in ``obj`` (1 for a flat container), counting no deeper than
    ``limit + 1``; iterative, so a deep value cannot exhaust the stack."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        item, d = todo.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        todo.extend((c, d + 1) for c in children)
    return deepest


#: what each header field must hold, for the error message when the typed decoder refuses it
_FIELD_RULES = {
    "v": "v must be the protocol version, an integer",
    "stream": "stream must be 1-64 characters of [A-Za-z0-9._-], not starting with '_'",
    "seq": "seq must be an integer >= 0",
    "fmt": f"fmt must be one of {', '.join(FORMATS)}",
    "w": "w (width) must be an integer",
    "h": "h (height) must be an integer",
    "ts": "ts must be a number (seconds since the epoch)",
    "data": "data must be bin",
}
_FIELD_RE = re.compile(r"`\$\.(\w+)|field `(\w+)`")


def _validation_message(exc: msgspec.ValidationError) -> str:
    """A header error in the protocol's words: which field, what it must hold, what msgspec saw."""
    text = str(exc)
    found = _FIELD_RE.search(text)
    name = (found.group(1) or found.group(2)) if found else None
    if name in _FIELD_RULES:
        return f"{_FIELD_RULES[name]} ({_clip(text)})"
    if text.startswith("Expected `object`") or "at `key` in `$`" in text:
        return f"part 0 must be a msgpack map with string keys ({_clip(text)})"
    return f"invalid header ({_clip(text)})"


def _where_to_answer(head_buf: Any) -> tuple[str | None, int | None, Any]:
    """The stream, seq and version of a header the typed decoder refused, where they can be read."""
    try:
        loose = _LOOSE_DECODER.decode(head_buf)
    except _DECODE_ERRORS:
        return None, None, None
    stream = seq = version = None
    try:
        version = _INT_DECODER.decode(loose.v) if loose.v is not _NO_META else None
    except _DECODE_ERRORS:
        pass
    try:
        stream = _STR_DECODER.decode(loose.stream) if loose.stream is not _NO_META else None
    except _DECODE_ERRORS:
        pass
    try:
        seq = _INT_DECODER.decode(loose.seq) if loose.seq is not _NO_META else None
    except _DECODE_ERRORS:
        pass
    return (stream if valid_stream(stream) else None), (seq if isinstance(seq, int) and seq >= 0 else None), version


def _jpeg_size(data: Any) -> tuple[int, int]:
    import simplejpeg

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except (ValueError, TypeError) as exc:
        raise FrameError(f"not a valid JPEG header ({_clip(str(exc))})") from None
    return width, height


def _decode_header(head_buf: Any) -> _Header:
    """The typed decoding of a header of at most ``max_header_bytes`` (plus a placeholder)."""
    try:
        return _HEADER_DECODER.decode(head_buf)
    except msgspec.ValidationError as exc:
        stream, seq, version = _where_to_answer(head_buf)
        if version is not None and version != VERSION:  # a future version may have other fields
            raise _bad(f"unsupported protocol version {version}; this server speaks v{VERSION}", stream, seq) from None
        raise _bad(_validation_message(exc), stream, seq) from None
    except RecursionError:
        raise _bad("part 0 is nested too deeply to be a frame header") from None
    except _DECODE_ERRORS as exc:
        raise _bad(f"part 0 is not a msgpack map ({type(exc).__name__}: {_clip(str(exc))})") from None


#: msgpack's bin markers: (first byte, header bytes); the length follows the first byte
_BIN_MARKERS = ((0xC6, 5), (0xC5, 3), (0xC4, 2))
_MAX_DATA_CANDIDATES = 4


def _decode_large_one_part(buf: Any, max_header: int) -> _Header:
    """Decode a one-part message larger than ``max_header`` bytes while reading at most about
    ``max_header`` bytes of msgpack, so that no part of it but ``data`` costs work.

    Such a message is only valid if one bin value (``data``) holds all but ``max_header`` of
    its bytes, so that bin's marker lies in the first ``max_header`` bytes and its length is
    known from the total. For each such candidate, the bytes around it are decoded with the
    bin replaced by a 16-byte random placeholder: if the decoder returns the placeholder as
    ``data``, the candidate is the real ``data`` value (the rest of the message parses the
    same with either), and ``data`` becomes a view of the received bytes.
    """
    import os

    view = memoryview(buf).cast("B")
    total = view.nbytes
    window = bytes(view[:max_header + 5])
    # (message, stream, seq) of the first refusal, not the exception: an exception kept in a local
    # would form a cycle with its traceback and hold the received message until a GC pass
    first_error: tuple[str, Any, Any] | None = None
    tried = 0
    for at in sorted(i for marker, _ in _BIN_MARKERS for i in _find_all(window, marker)):
        marker = window[at]
        size = dict(_BIN_MARKERS)[marker]
        length = int.from_bytes(window[at + 1:at + size], "big")
        end = at + size + length
        if length < total - max_header or end > total or at + size > len(window):
            continue
        tried += 1
        if tried > _MAX_DATA_CANDIDATES:
            break
        nonce = os.urandom(16)
        small = window[:at] + b"\xc4\x10" + nonce + bytes(view[end:])
        try:
            head = _decode_header(small)
        except ProtocolError as exc:
            first_error = first_error or (str(exc), getattr(exc, "stream", None), getattr(exc, "seq", None))
            continue
        if head.data is not None and head.data.tobytes() == nonce:
            head.data = view[at + size:end]
            return head
    if first_error is not None:
        raise _bad(*first_error)
    raise _bad(f"one-part message of {total} bytes: everything but its data must fit in {max_header} bytes "
               f"(the header limit), and no data value of at least {total - max_header} bytes was found there")


def _find_all(data: bytes, byte: int) -> list[int]:
    out, start, needle = [], 0, bytes([byte])
    while (i := data.find(needle, start)) != -1 and len(out) < 4096:
        out.append(i)
        start = i + 1
    return out


def decode_frame(parts: Sequence[Any], limits: Limits = DEFAULT_LIMITS, ring: Any = None) -> FrameMessage:
    """Decode and validate one frame message (a list of ZeroMQ parts).

    ``ring`` is the sender's shared-memory ring (:class:`streampi.shared_frames.Ring`), if it
    has one: a header with ``shm`` takes its pixels from the slot it names (raw formats only),
    and the message's :attr:`FrameMessage.shm_slot` says which slot to release with the answer.

    Raises :class:`ProtocolError` with ``stream``/``seq`` attributes (``None`` where they
    could not be read); its message quotes untrusted values only through :func:`bounded_repr`.
    """
    recv = time.time()
    if not 1 <= len(parts) <= limits.max_parts:
        allowed = "1 or 2" if limits.max_parts == 2 else "1"
        raise _bad(f"a frame message has {allowed} parts, got {len(parts)}")
    bufs = [_buffer(p) for p in parts]
    total = sum(_nbytes(b) for b in bufs)
    if total > limits.max_message_bytes:
        raise _bad(f"message of {total} bytes exceeds the limit of {limits.max_message_bytes}")
    head_buf = bufs[0]
    if len(bufs) == 2 and _nbytes(head_buf) > limits.max_header_bytes:
        raise _bad(f"header part of {_nbytes(head_buf)} bytes exceeds the limit of {limits.max_header_bytes}")
    if len(bufs) == 1 and _nbytes(head_buf) > limits.max_header_bytes:
        head = _decode_large_one_part(head_buf, limits.max_header_bytes)
    else:
        head = _decode_header(head_buf)

    stream, seq = head.stream, head.seq

    def fail(msg: str) -> ProtocolError:
        return _bad(msg, stream if valid_stream(stream) else None, seq if seq >= 0 else None)

    data = head.data
    if head.v != VERSION:
        raise fail(f"unsupported protocol version {bounded_repr(head.v)}; this server speaks v{VERSION}")
    if not valid_stream(stream):
        raise fail(f"stream must be 1-64 characters of [A-Za-z0-9._-], not starting with '_'; "
                   f"got {bounded_repr(stream)}")
    if seq < 0:
        raise fail(f"seq must be an integer >= 0, got {seq}")
    ts = head.ts
    if ts is not None and not (math.isfinite(ts) and ts >= 0):
        raise fail(f"ts must be a finite number >= 0 (seconds since the epoch), got {ts!r}")
    fmt = head.fmt
    if fmt not in FORMATS:
        raise fail(f"fmt must be one of {', '.join(FORMATS)}, got {bounded_repr(fmt)}")
    has_meta = head.meta is not _NO_META
    meta = None
    if has_meta:
        size = len(head.meta)
        if size > limits.max_meta_bytes:
            raise fail(f"meta of {size} bytes packed exceeds the limit of {limits.max_meta_bytes}")
        try:
            meta = _META_DECODER.decode(head.meta)
        except RecursionError:
            raise fail(f"meta is nested deeper than {limits.max_meta_depth} levels") from None
        except _DECODE_ERRORS as exc:
            raise fail(f"meta must be a map with string keys ({_clip(str(exc))})") from None
        if _depth(meta, limits.max_meta_depth) > limits.max_meta_depth:
            raise fail(f"meta is nested deeper than {limits.max_meta_depth} levels")
    width, height = head.w, head.h
    if head.shm is not None:
        return _shared_frame(head, bufs, ring, limits, fail, meta, has_meta, recv)
    if len(bufs) == 2:
        if data is not None:
            raise fail("data must not be in the header when the pixels come as part 1")
        data = bufs[1]
    elif data is None:
        raise fail("data is required when the message has one part")
    nbytes = _nbytes(memoryview(data))
    if fmt in RAW_FORMATS:
        try:
            check_raw_size(fmt, width, height, nbytes, limits.max_pixels)
        except FrameError as exc:
            raise fail(str(exc)) from None
    else:
        if nbytes == 0:
            raise fail("empty JPEG")
        try:
            jw, jh = _jpeg_size(data)
        except FrameError as exc:
            raise fail(str(exc)) from None
        if jw <= 0 or jh <= 0 or jw * jh > limits.max_pixels:
            raise fail(f"JPEG header claims {jw}×{jh} pixels; the limit is {limits.max_pixels}")
        width = height = None
    return FrameMessage(stream, seq, fmt, data, width, height, ts, meta, has_meta, recv)


def _shared_frame(head: _Header, bufs: list, ring: Any, limits: Limits, fail: Any, meta: Any, has_meta: bool,
                  recv: float) -> FrameMessage:
    """A frame whose pixels are in a slot of the sender's shared-memory ring."""
    if ring is None:
        raise fail("this frame names a shared-memory slot (shm), but its producer has no shared-memory ring "
                   "from this server: rings are granted to protocol v1.1 producers that ask in their hello, and "
                   "live as long as the server that made them (a frame sent to a server that has restarted since, "
                   "or that reclaimed the ring, cannot be read)")
    if len(bufs) != 1 or head.data is not None:
        raise fail("a shared-memory frame (shm) carries no pixels in the message: one part, no data")
    if head.fmt not in RAW_FORMATS:
        raise fail(f"shared memory carries raw pixels only ({', '.join(RAW_FORMATS)}); send {head.fmt} frames "
                   f"over the wire")
    slot, ticket = head.shm
    if ticket < 1:
        raise fail(f"a shared-memory ticket is an integer >= 1, got {ticket}")
    try:
        nbytes = check_raw_size(head.fmt, head.w, head.h, None, limits.max_pixels)
    except FrameError as exc:
        raise fail(str(exc)) from None
    try:
        data = ring.take(slot, ticket, nbytes)
    except ValueError as exc:
        raise fail(str(exc)) from None
    msg = FrameMessage(head.stream, head.seq, head.fmt, data, head.w, head.h, head.ts, meta, has_meta, recv)
    msg.shm_slot = slot
    return msg


def encode_frame(stream: str, seq: int, fmt: str, data: Any, width: int | None = None, height: int | None = None,
                 *, ts: float | None = None, meta: dict | None = None, two_part: bool = True,
                 shm: tuple[int, int] | None = None) -> list[Any]:
    """Build the parts of one frame message (the inverse of :func:`decode_frame`).

    ``shm=(slot, ticket)``: the pixels are in that slot of the producer's shared-memory ring
    (v1.1), so the message is the header alone and ``data`` is not sent."""
    head: dict[str, Any] = {"v": VERSION, "stream": stream, "seq": int(seq), "fmt": fmt}
    if width is not None:
        head["w"], head["h"] = int(width), int(height)  # type: ignore[arg-type]
    if ts is not None:
        head["ts"] = float(ts)
    if meta is not None:
        head["meta"] = meta
    if shm is not None:
        head["shm"] = [int(shm[0]), int(shm[1])]
        return [_pack(head)]
    payload = memoryview(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data).cast("B")
    if two_part:
        return [_pack(head), payload]
    head["data"] = bytes(payload)
    return [_pack(head)]


# -- protocol v1.1: credit-based flow control (DEALER → ROUTER) ----------------------------
#: The first part of every v1.1 message says what follows.
KIND_FRAME = b"frame"  # client → server: a v1 frame message follows (its 1 or 2 parts)
KIND_HELLO = b"hello"  # client → server: "I am here" (on connect, and while it waits for credit)
KIND_CREDIT = b"credit"  # server → client: the client's window and how many of its frames were answered
KIND_BYE = b"bye"  # client → server: "I am closing": the server forgets it and frees its ring at once
#: A hello or credit map larger than this is not one.
MAX_CONTROL_BYTES = 1024
_HELLO_DECODER = msgspec.msgpack.Decoder(dict[str, Any])


@dataclass(frozen=True)
class Credit:
    """The server's word to one v1.1 producer.

    ``session`` names the server's memory of this producer; when it changes (the server
    restarted, or forgot an idle producer) the producer starts counting afresh. ``acked``
    is how many of the producer's frames of this session the server has answered (a
    running total, so a lost or merged credit message costs nothing); the producer may have
    ``window - (sent - acked)`` more frames in flight. ``policy`` is its stream's policy:
    ``latest`` producers replace a frame that has no credit, ``queue`` producers wait.

    A producer that asked for shared memory in its hello also gets ``shm`` (its ring, a
    :class:`~streampi.shared_frames.RingOffer` as a map), ``shm_seen`` (the highest ticket
    received) and ``shm_held`` (the slots the server still holds), or ``shm_refused`` (why
    not). Like ``acked``, these are a snapshot, not a change: a lost message costs nothing.
    """

    session: str
    window: int
    acked: int
    policy: str
    shm: dict | None = None
    shm_seen: int = 0
    shm_held: tuple[int, ...] = ()
    shm_refused: str | None = None


@dataclass(frozen=True)
class Hello:
    """A v1.1 producer's hello: the stream it sends (if it says) and, when it asks for a
    shared-memory ring, the bytes one slot must hold (its largest raw frame)."""

    stream: str | None = None
    shm_bytes: int | None = None


def encode_hello(stream: str | None = None, shm_bytes: int | None = None) -> list[bytes]:
    body: dict[str, Any] = {"v": VERSION}
    if stream is not None:
        body["stream"] = stream
    if shm_bytes is not None:
        body["shm"] = int(shm_bytes)
    return [KIND_HELLO, _pack(body)]


def encode_bye() -> list[bytes]:
    return [KIND_BYE]


def decode_hello_message(parts: Sequence[Any]) -> Hello:
    """A hello's stream and shared-memory request; ProtocolError when it is not a hello."""
    if len(parts) > 2 or (len(parts) == 2 and _nbytes(parts[1]) > MAX_CONTROL_BYTES):
        raise ProtocolError(f"a hello is the kind part and at most one map of {MAX_CONTROL_BYTES} bytes")
    if len(parts) == 1:
        return Hello()
    try:
        body = _HELLO_DECODER.decode(_buffer(parts[1]))
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"a hello's second part must be a msgpack map: {exc}") from None
    stream = body.get("stream")
    if stream is not None and not valid_stream(stream):
        raise ProtocolError(f"hello names an invalid stream {bounded_repr(stream)}")
    shm_bytes = body.get("shm")
    if shm_bytes is not None and (isinstance(shm_bytes, bool) or not isinstance(shm_bytes, int) or shm_bytes < 1):
        raise ProtocolError(f"a hello's shm is the bytes of one slot, an integer >= 1; got {bounded_repr(shm_bytes)}")
    return Hello(stream, shm_bytes)


def encode_credit(credit: Credit) -> list[bytes]:
    body: dict[str, Any] = {"session": credit.session, "window": credit.window, "acked": credit.acked,
                            "policy": credit.policy}
    if credit.shm is not None:
        body.update(shm=credit.shm, shm_seen=credit.shm_seen, shm_held=list(credit.shm_held))
    elif credit.shm_refused is not None:
        body["shm_refused"] = credit.shm_refused
    return [KIND_CREDIT, _pack(body)]


def decode_credit(parts: Sequence[Any]) -> Credit:
    """A credit message as a client receives it (ProtocolError when it is not one)."""
    if len(parts) != 2 or bytes(parts[0]) != KIND_CREDIT or _nbytes(parts[1]) > MAX_CONTROL_BYTES:
        raise ProtocolError("expected a credit message: the part b'credit' and one msgpack map")
    try:
        body = _HELLO_DECODER.decode(_buffer(parts[1]))
        shm = body.get("shm")
        credit = Credit(str(body["session"]), int(body["window"]), int(body["acked"]), str(body["policy"]),
                        shm if isinstance(shm, dict) else None, int(body.get("shm_seen", 0)),
                        tuple(int(k) for k in body.get("shm_held", ())),
                        str(body["shm_refused"])[:200] if "shm_refused" in body else None)
    except (KeyError, *_DECODE_ERRORS) as exc:
        raise ProtocolError(f"a credit map needs session, window, acked and policy: {exc!r}") from None
    if credit.window < 1 or credit.acked < 0:
        raise ProtocolError(f"a credit message with window {credit.window} and acked {credit.acked}")
    return credit


def encode_result(result: dict) -> list[bytes]:
    """The two parts of a result message: topic, msgpack map."""
    return [result["stream"].encode(), _pack(result)]


def decode_result(parts: Sequence[Any]) -> dict:
    if len(parts) != 2:
        raise ProtocolError(f"a result message has 2 parts, got {len(parts)}")
    try:
        return _RESULT_DECODER.decode(_buffer(parts[1]))
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"a result's second part must be a msgpack map ({_clip(str(exc))})") from None


def truncate_message(message: str, max_bytes: int = MAX_ERROR_MESSAGE_BYTES) -> str:
    """``message`` cut to at most ``max_bytes`` UTF-8 bytes (on a character boundary)."""
    raw = message.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return message
    return raw[:max(0, max_bytes - 3)].decode("utf-8", "ignore") + "..."


def error_result(code: str, message: str, stream: str | None = None, seq: int | None = None,
                 ts: float | None = None, meta: Any = None, has_meta: bool = False, *,
                 max_message_bytes: int = MAX_ERROR_MESSAGE_BYTES) -> dict:
    """An ``ok: false`` result; ``message`` is cut to ``max_message_bytes`` so that an error
    answer to a frame without ``meta`` is never larger than about that plus 200 bytes."""
    message = truncate_message(message, max_message_bytes)
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


# -- nodes: remote workers (DEALER on the node → ROUTER at the server's --node-bind) ------
# A node connects out, says what it runs (node-hello) and is welcomed with a generation or
# refused with a reason. The server sends it batches only while one of its workers is free
# (its credit: one batch per worker, each of at most max_batch frames); the node answers each
# batch once (done, lost with its runner, or returned while its worker backs off). Both sides
# send a beat every NODE_BEAT_S; a node silent for NODE_SILENT_S is lost. Every message is
# bounded: a map of at most MAX_CONTROL_BYTES, a batch of at most MAX_NODE_BATCH frames.
KIND_NODE_HELLO = b"node-hello"  # node → server: what it runs
KIND_NODE_WELCOME = b"node-welcome"  # server → node: joined, with its generation
KIND_NODE_REFUSED = b"node-refused"  # server → node: not joined, and why (the node stops)
KIND_NODE_REJOIN = b"node-rejoin"  # server → node: "I do not know you (any more)": hello again
KIND_NODE_BATCH = b"node-batch"  # server → node: a batch for one of its workers
KIND_NODE_DONE = b"node-done"  # node → server: a batch's outcomes
KIND_NODE_LOST = b"node-lost"  # node → server: a batch's runner died under it
KIND_NODE_RETURNED = b"node-returned"  # node → server: a batch not run (its worker is backing off)
KIND_NODE_BEAT = b"node-beat"  # both ways, every NODE_BEAT_S (the node's carries its workers' states)
KIND_NODE_BYE = b"node-bye"  # node → server: leaving
NODE_KINDS = (KIND_NODE_HELLO, KIND_NODE_WELCOME, KIND_NODE_REFUSED, KIND_NODE_REJOIN, KIND_NODE_BATCH,
              KIND_NODE_DONE, KIND_NODE_LOST, KIND_NODE_RETURNED, KIND_NODE_BEAT, KIND_NODE_BYE)
NODE_BEAT_S = 1.0
NODE_SILENT_S = 3.0
#: frames in one node batch at most (and workers a node may have)
MAX_NODE_BATCH = 64
MAX_NODE_WORKERS = 64
#: what crosses the link: the frame as the producer sent it (the node runs the kernel), or the
#: model's input tensor (the server runs the kernel; the node invokes and sends the raw outputs back,
#: the server decodes them)
NODE_MODES = ("frame", "tensor")

_Name = Annotated[str, msgspec.Meta(max_length=64)]
_Text = Annotated[str, msgspec.Meta(max_length=400)]
_Count = Annotated[int, msgspec.Meta(ge=0)]


class NodeHello(msgspec.Struct, forbid_unknown_fields=False):
    """What a node runs: ``model_sha256`` (hex of the whole file) must be the server's."""

    v: int
    node_id: _Name
    name: _Name
    model_sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    model_name: _Name
    workers: Annotated[int, msgspec.Meta(ge=1, le=MAX_NODE_WORKERS)]
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=MAX_NODE_BATCH)]
    mode: _Name = "frame"
    config_digest: _Name = ""  # the node's model options (labels, decoder, normalisation) must be the server's
    runtime: _Text = ""
    version: _Name = ""
    #: a digest of each model option by name, so that a refusal can say which ones differ
    config_fields: Annotated[dict[_Name, _Name], msgspec.Meta(max_length=32)] = {}


class NodeWelcome(msgspec.Struct):
    generation: _Count
    session: _Name
    mode: _Name


class NodeReason(msgspec.Struct):
    reason: _Text


class NodeBatchHead(msgspec.Struct):
    """A batch's header; part k+2 holds the pixels (or JPEG) of frame k."""

    id: _Count
    generation: _Count
    worker: Annotated[int, msgspec.Meta(ge=0, lt=MAX_NODE_WORKERS)]
    #: (stream, seq, fmt, width, height) of each frame
    frames: Annotated[list[tuple[_Name, _Count, _Name, int | None, int | None]],
                      msgspec.Meta(min_length=1, max_length=MAX_NODE_BATCH)]


class NodeOutcome(msgspec.Struct):
    payload: dict[str, Any] | None = None
    error: tuple[_Name, _Text] | None = None
    pre_ms: float = 0.0
    timing: dict[str, Any] = {}


class NodeDone(msgspec.Struct):
    id: _Count
    generation: _Count
    outcomes: Annotated[list[NodeOutcome], msgspec.Meta(max_length=MAX_NODE_BATCH)]
    node_ms: float = 0.0  # the node's time from receiving the batch to answering it


class NodeLost(msgspec.Struct):
    id: _Count
    generation: _Count
    reason: _Text = ""


class NodeBeat(msgspec.Struct):
    generation: _Count = 0
    #: each worker's state (ready, starting, backoff, stopped): only ready ones get batches
    states: Annotated[list[_Name], msgspec.Meta(max_length=MAX_NODE_WORKERS)] = []


_NODE_STRUCTS: dict[bytes, Any] = {KIND_NODE_HELLO: NodeHello, KIND_NODE_WELCOME: NodeWelcome,
                                   KIND_NODE_REFUSED: NodeReason, KIND_NODE_REJOIN: NodeReason,
                                   KIND_NODE_BATCH: NodeBatchHead, KIND_NODE_DONE: NodeDone,
                                   KIND_NODE_LOST: NodeLost, KIND_NODE_RETURNED: NodeLost,
                                   KIND_NODE_BEAT: NodeBeat}
_NODE_DECODERS = {kind: msgspec.msgpack.Decoder(struct) for kind, struct in _NODE_STRUCTS.items()}


def encode_node(kind: bytes, body: Any = None, data: Sequence[Any] = ()) -> list[Any]:
    """A node message: its kind, its map (a struct of the kind's type, or None for a bye) and,
    for a batch, the frames' pixels (buffers, sent without a copy)."""
    if kind not in NODE_KINDS:
        raise ValueError(f"not a node message kind: {kind!r}")
    if body is None:
        return [kind]
    return [kind, _pack(body), *data]


def decode_node(parts: Sequence[Any], max_message_bytes: int = DEFAULT_LIMITS.max_message_bytes) -> tuple[bytes, Any, list]:
    """(kind, body, data parts) of a node message; ProtocolError naming what is wrong.

    Bounds: a map of MAX_CONTROL_BYTES (a done map of ``max_message_bytes``: it carries
    results), a batch of 1..MAX_NODE_BATCH frames with one data part each, nothing else after
    any other map."""
    if not parts:
        raise ProtocolError("an empty node message")
    kind = bytes(parts[0][:32]) if isinstance(parts[0], (bytes, bytearray, memoryview)) else bytes(_buffer(parts[0]))[:32]
    if kind not in NODE_KINDS:
        raise ProtocolError(f"a node message starts with one of {b', '.join(NODE_KINDS).decode()}, got "
                            f"{bounded_repr(kind)}")
    if kind == KIND_NODE_BYE:
        if len(parts) != 1:
            raise ProtocolError("a node-bye is the kind part alone")
        return kind, None, []
    if len(parts) < 2:
        raise ProtocolError(f"a {kind.decode()} message needs its map")
    limit = max_message_bytes if kind == KIND_NODE_DONE else MAX_CONTROL_BYTES * (8 if kind == KIND_NODE_BATCH else 1)
    if _nbytes(memoryview(_buffer(parts[1]))) > limit:
        raise ProtocolError(f"a {kind.decode()} map is larger than {limit} bytes")
    if kind != KIND_NODE_BATCH and len(parts) != 2:
        raise ProtocolError(f"a {kind.decode()} message has 2 parts, got {len(parts)}")
    try:
        body = _NODE_DECODERS[kind].decode(_buffer(parts[1]))
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"a bad {kind.decode()} map: {_clip(str(exc))}") from None
    data = list(parts[2:])
    if kind == KIND_NODE_BATCH and len(data) != len(body.frames):
        raise ProtocolError(f"a node-batch of {len(body.frames)} frames carries {len(data)} data parts")
    return kind, body, data
