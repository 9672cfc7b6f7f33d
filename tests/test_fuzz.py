"""Property-based fuzzing of the frame decoder and of the Preprocessor entry point.

The properties: whatever bytes arrive, :func:`decode_frame` either returns a frame whose
fields agree with each other, or raises :class:`ProtocolError` with a short message: no other
exception, no crash. The Preprocessor either writes a slot of the right shape or raises
:class:`FrameError`. Which of the two happened is recorded (``hypothesis.event``), and inputs
built to be valid must be accepted, inputs built with one thing wrong refused: a decoder that
refused everything would fail here. ``bench/fuzz.py`` runs this module with many more examples
(``STREAMPI_FUZZ_SCALE``) and prints the accepted/refused counts. The default run is bounded
(about half a minute here); each crash found becomes a corpus entry in ``tests/test_limits.py``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import msgpack
import numpy as np
import simplejpeg
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streampi import ShapesGenerator
from streampi.errors import FrameError, ProtocolError
from streampi.preprocess import FORMATS, RAW_FORMATS, Preprocessor, frame_nbytes
from streampi.protocol import MAX_ERROR_MESSAGE_BYTES, Limits, decode_frame, valid_stream

#: examples per property in the default run; bench/fuzz.py sets it higher through the environment
SCALE = float(os.environ.get("STREAMPI_FUZZ_SCALE", "1"))
SMALL = Limits(max_message_bytes=1 << 16, max_header_bytes=512, max_meta_bytes=128, max_meta_depth=4,
               max_pixels=64 * 64)


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# -- strategies --------------------------------------------------------------------------------
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6) | st.integers(0, 9),
                                                                      children, max_size=4),
    max_leaves=20,
)


def mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` four times in five, so that random inputs also get past the first check."""
    return st.integers(0, 4).flatmap(lambda k: invalid if k == 0 else valid)


#: per header field: (a valid value, a plausible invalid one)
FIELDS = {
    "v": (st.just(1), st.integers(-2, 3) | st.just("1")),
    "stream": (st.from_regex(r"[A-Za-z0-9.-][A-Za-z0-9._-]{0,63}", fullmatch=True),
               st.sampled_from(["x" * 65, "_errors", "a b", "é", ""]) | st.text(max_size=70)),
    "seq": (st.integers(0, 2**64 - 1), st.integers(-5, -1) | st.just(2.0**64)),
    "fmt": (st.sampled_from(FORMATS), st.text(max_size=6)),
    "w": (st.integers(1, 40), st.integers(-3, 0) | st.integers(2**31, 2**64 - 1)),
    "h": (st.integers(1, 40), st.integers(-3, 0) | st.integers(-(2**63), -(2**31))),
    "ts": (st.floats(0, 2e9) | st.integers(0, 2**40), st.floats(allow_nan=True, allow_infinity=True)),
    "meta": (st.dictionaries(st.text(max_size=6), msgpack_values, max_size=4),
             st.dictionaries(st.integers(0, 3), msgpack_values, max_size=2)),
}


@st.composite
def headers(draw: Any) -> list[bytes]:
    """Parts whose header fields are each valid, plausibly wrong, of any type or absent, with a
    payload whose size is often right or off by a little."""
    head: dict[Any, Any] = {}
    for key, (valid, invalid) in FIELDS.items():
        choice = draw(st.integers(0, 19))
        if choice < 16:
            head[key] = draw(valid)
        elif choice < 17:
            head[key] = draw(invalid)
        elif choice < 18:
            head[key] = draw(msgpack_values)
        elif key in ("ts", "meta") or choice < 19:
            head.pop(key, None)
    if draw(st.integers(0, 4)) == 0:
        head[draw(st.text(max_size=8))] = draw(msgpack_values)
    fmt, w, h = head.get("fmt"), head.get("w"), head.get("h")
    size = draw(st.integers(0, 300))
    if fmt in RAW_FORMATS and isinstance(w, int) and isinstance(h, int) and 0 < w <= 70 and 0 < h <= 70:
        if fmt in ("i420", "nv12") and draw(st.booleans()):
            w, h = head["w"], head["h"] = w + w % 2, h + h % 2
        size = max(0, frame_nbytes(fmt, w, h) + draw(st.sampled_from([0, 0, 0, -1, 1])))
    payload = bytes(size) if fmt != "jpeg" or draw(st.booleans()) else _SMALL_JPEG
    if draw(st.booleans()):
        head["data"] = payload if draw(st.integers(0, 4)) else draw(msgpack_values)
        return [msgpack.packb(head, use_bin_type=True)]
    return [msgpack.packb(head, use_bin_type=True), payload]


@st.composite
def mutated(draw: Any) -> list[bytes]:
    """A valid message with bytes of its header flipped, cut or inserted."""
    w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))  # one-part messages past 512 bytes too
    fmt = draw(st.sampled_from(["rgb", "gray", "rgba"]))
    head = {"v": 1, "stream": "cam", "seq": draw(st.integers(0, 2**64 - 1)), "fmt": fmt, "w": w, "h": h,
            "ts": 1.5, "meta": {"k": [1, {"x": "y"}]}}
    one_part = draw(st.booleans())
    payload = bytes(frame_nbytes(fmt, w, h))
    if one_part:
        head["data"] = payload
    raw = bytearray(msgpack.packb(head, use_bin_type=True))
    for _ in range(draw(st.integers(1, 4))):
        op, at = draw(st.integers(0, 2)), draw(st.integers(0, len(raw)))
        if op == 0 and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif op == 1:
            del raw[at:at + draw(st.integers(1, 8))]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=6))
    return [bytes(raw)] if one_part else [bytes(raw), payload]


#: meta that fits SMALL's 128 bytes whatever is drawn: at most 3 short string keys, short scalar values
_short_text = st.text("abcxyz_", max_size=6)
small_meta = st.dictionaries(_short_text, st.none() | st.booleans() | st.integers(-2**31, 2**31) | _short_text,
                             max_size=3)


@st.composite
def valid_heads(draw: Any) -> tuple[dict, bytes]:
    """A header whose every field is valid (``ts`` and ``meta`` present or not) and the payload
    its size needs: the decoder must accept it."""
    fmt = draw(st.sampled_from(FORMATS))
    head: dict[str, Any] = {"v": 1, "stream": draw(FIELDS["stream"][0]), "seq": draw(FIELDS["seq"][0]), "fmt": fmt}
    if draw(st.booleans()):
        head["ts"] = draw(FIELDS["ts"][0])
    if draw(st.booleans()):
        head["meta"] = draw(small_meta)
    if fmt == "jpeg":
        return head, _SMALL_JPEG
    even = 2 if fmt in ("i420", "nv12") else 1
    head["w"], head["h"] = even * draw(st.integers(1, 40 // even)), even * draw(st.integers(1, 40 // even))
    return head, bytes(frame_nbytes(fmt, head["w"], head["h"]))


def as_parts(head: dict, payload: Any, one_part: bool) -> list[bytes]:
    """The message: pixels in the header's ``data`` (one part) or as a second part."""
    if one_part:
        return [msgpack.packb({**head, "data": payload}, use_bin_type=True)]
    return [msgpack.packb(head, use_bin_type=True), payload]


@st.composite
def valid_messages(draw: Any) -> list[bytes]:
    head, payload = draw(valid_heads())
    return as_parts(head, payload, draw(st.booleans()))


#: per field: values the protocol refuses whatever else the header holds
ALWAYS_INVALID = {
    "v": st.sampled_from([0, 2, -1, "1", 1.0]),
    "stream": st.sampled_from(["x" * 65, "_errors", "a b", "é", "", "cam/1"]),
    "seq": st.integers(-(2**63), -1),
    "fmt": st.text(max_size=6).filter(lambda f: f not in FORMATS),
    "ts": st.sampled_from([math.nan, math.inf, -math.inf, -0.5, -(2**40)]),
    "meta": st.sampled_from([{1: 2}, [1, 2], "text", 7, None]),
}
RAW_SIZE_INVALID = st.sampled_from([0, -3, 2**31, "8", 2.0, None])


@st.composite
def broken_messages(draw: Any) -> list[bytes]:
    """A valid message with exactly one thing wrong: a field of a value the protocol refuses,
    a required field left out, a payload one byte off, or the pixels in both places or none."""
    head, payload = draw(valid_heads())
    one_part = draw(st.booleans())
    raw = head["fmt"] in RAW_FORMATS
    kinds = ["field", "missing", "pixels twice", "no pixels"] + (["size field", "payload size"] if raw else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "field":
        key = draw(st.sampled_from(sorted(ALWAYS_INVALID)))
        head[key] = draw(ALWAYS_INVALID[key])
    elif kind == "missing":
        del head[draw(st.sampled_from(["v", "stream", "seq", "fmt", *(["w", "h"] if raw else [])]))]
    elif kind == "size field":
        head[draw(st.sampled_from(["w", "h"]))] = draw(RAW_SIZE_INVALID)
    elif kind == "payload size":
        payload = payload + b"\0" if draw(st.booleans()) else payload[:-1]
    event(f"broken: {kind}")
    if kind == "pixels twice":
        return [msgpack.packb({**head, "data": payload}, use_bin_type=True), payload]
    if kind == "no pixels":
        return [msgpack.packb(head, use_bin_type=True)]
    return as_parts(head, payload, one_part)


_JPEG = simplejpeg.encode_jpeg(ShapesGenerator(seed=5).frame(48, 32)[0], quality=70)
_SMALL_JPEG = simplejpeg.encode_jpeg(ShapesGenerator(seed=6).frame(16, 16)[0], quality=50)
raw_parts = st.lists(st.binary(max_size=120), min_size=0, max_size=4)


# -- properties --------------------------------------------------------------------------------
def check_decode(parts: list[bytes], limits: Limits = SMALL) -> str:
    """The decoder's contract on any input (raises AssertionError, or any stray exception);
    returns ``"accepted"`` or ``"refused"``."""
    try:
        msg = decode_frame(parts, limits)
    except ProtocolError as exc:
        text = str(exc)
        assert 0 < len(text.encode()) <= MAX_ERROR_MESSAGE_BYTES, text
        stream, seq = getattr(exc, "stream", None), getattr(exc, "seq", None)
        assert stream is None or valid_stream(stream)
        assert seq is None or (isinstance(seq, int) and seq >= 0)
        return "refused"
    assert valid_stream(msg.stream) and isinstance(msg.seq, int) and 0 <= msg.seq < 2**64
    assert msg.fmt in FORMATS
    assert msg.ts is None or (math.isfinite(msg.ts) and msg.ts >= 0)
    assert not msg.has_meta or isinstance(msg.meta, dict)
    nbytes = memoryview(msg.data).nbytes
    if msg.fmt in RAW_FORMATS:
        assert 0 < msg.width * msg.height <= limits.max_pixels
        assert nbytes == frame_nbytes(msg.fmt, msg.width, msg.height)
    else:
        assert nbytes > 0
    return "accepted"


def check_preprocess(pre: Preprocessor, data: Any, fmt: str, width: Any, height: Any) -> str:
    """The Preprocessor's contract: a slot of the right shape, or FrameError."""
    try:
        out, transform = pre(data, fmt, width, height)
    except FrameError as exc:
        assert str(exc)
        return "refused"
    assert out.shape == pre.shape and out.dtype == pre.dtype
    if out.dtype == np.float32:
        assert np.isfinite(out).all()
    return "accepted"


@fuzz_settings(1500)
@given(raw_parts)
def test_decoder_on_random_bytes(parts):
    event(check_decode(parts))


@fuzz_settings(800)
@given(headers())
def test_decoder_on_random_headers(parts):
    event(check_decode(parts))


@fuzz_settings(1500)
@given(mutated())
def test_decoder_on_mutated_messages(parts):
    event(check_decode(parts))


@fuzz_settings(300)
@given(headers())
def test_decoder_with_default_limits(parts):
    event(check_decode(parts, Limits()))


@fuzz_settings(400)
@given(valid_messages())
def test_decoder_accepts_every_valid_message(parts):
    assert check_decode(parts) == "accepted"
    assert check_decode(parts, Limits()) == "accepted"


@fuzz_settings(600)
@given(broken_messages())
def test_decoder_refuses_every_message_with_one_thing_wrong(parts):
    assert check_decode(parts) == "refused"
    assert check_decode(parts, Limits()) == "refused"


preprocessors = st.builds(
    Preprocessor,
    st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3])),
    st.sampled_from(["uint8", "int8", "float32"]),
    scale=st.just(1 / 255), zero_point=st.sampled_from([0, -128]),
    resize=st.sampled_from(["stretch", "letterbox", "crop"]), interpolation=st.sampled_from(["auto", "linear", "area"]),
    max_pixels=st.just(64 * 64),
)


@st.composite
def raw_frames(draw: Any) -> tuple[Any, str, Any, Any]:
    fmt = draw(mostly(st.sampled_from(RAW_FORMATS), st.text(max_size=5)))
    w = draw(mostly(st.integers(1, 70), st.integers(-2, 0) | st.sampled_from([None, 2**40, 1.5, "8", True])))
    h = draw(mostly(st.integers(1, 70), st.integers(-2, 0) | st.sampled_from([None, 2**40, 2.0, b"8"])))
    if fmt in ("i420", "nv12") and isinstance(w, int) and isinstance(h, int) and draw(st.booleans()):
        w, h = w + w % 2, h + h % 2
    size = draw(st.integers(0, 200))
    if fmt in RAW_FORMATS and isinstance(w, int) and isinstance(h, int) and 0 < w <= 70 and 0 < h <= 70:
        size = max(0, frame_nbytes(fmt, w, h) + draw(st.sampled_from([0, 0, 0, -1, 1, -w])))
    data = draw(st.binary(min_size=size, max_size=size))
    if draw(st.integers(0, 5)) == 0:
        data = draw(st.sampled_from([np.frombuffer(data, np.uint8).astype(np.int16), "text", None, 3, memoryview(data)]))
    return data, fmt, w, h


@fuzz_settings(800)
@given(preprocessors, raw_frames())
def test_preprocessor_on_random_raw_frames(pre, frame):
    event(check_preprocess(pre, *frame))


@st.composite
def valid_raw_frames(draw: Any) -> tuple[Any, str, int, int]:
    """A raw frame within the Preprocessor's 64×64 limit, its bytes exactly what its size needs."""
    fmt = draw(st.sampled_from(RAW_FORMATS))
    even = 2 if fmt in ("i420", "nv12") else 1
    w, h = even * draw(st.integers(1, 64 // even)), even * draw(st.integers(1, 64 // even))
    data = draw(st.binary(min_size=frame_nbytes(fmt, w, h), max_size=frame_nbytes(fmt, w, h)))
    return (memoryview(data) if draw(st.booleans()) else data), fmt, w, h


@fuzz_settings(300)
@given(preprocessors, valid_raw_frames(), st.sampled_from([-1, 1, -2]))
def test_preprocessor_accepts_valid_raw_frames_and_refuses_a_byte_count_off(pre, frame, off):
    data, fmt, w, h = frame
    assert check_preprocess(pre, data, fmt, w, h) == "accepted"
    wrong = bytes(data)[:off] if off < 0 else bytes(data) + bytes(off)
    assert check_preprocess(pre, wrong, fmt, w, h) == "refused"
    assert check_preprocess(pre, data, fmt, w + 64, h) == "refused"  # past 64×64 pixels




@st.composite
def jpegs(draw: Any) -> bytes:
    raw = bytearray(_JPEG)
    for _ in range(draw(st.integers(1, 6))):
        op, at = draw(st.integers(0, 2)), draw(st.integers(0, len(raw)))
        if op == 0 and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif op == 1:
            del raw[at:at + draw(st.integers(1, 64))]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


@fuzz_settings(400)
@given(preprocessors, jpegs())
def test_preprocessor_on_mutated_jpegs(pre, data):
    event(f"preprocessor {check_preprocess(pre, data, 'jpeg', None, None)}")
    event(f"decoder {check_decode([msgpack.packb({'v': 1, 'stream': 'j', 'seq': 0, 'fmt': 'jpeg'}), data], Limits())}")
    assert check_preprocess(pre, _JPEG, "jpeg", None, None) == "accepted"  # the JPEG before its mutation
