"""Hostile input: a corpus of malformed frame messages, each answered with an error.

Every entry is checked twice: against :func:`streampi.protocol.decode_frame` directly (fast,
exact), and sent over a real PUSH socket to a running server, which must answer it on the
expected topic and go on serving valid frames. A process server is then fed the whole corpus
many times while its resident memory is sampled.
"""

from __future__ import annotations

import gc
import os
import signal
import struct
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import psutil
import pytest
import simplejpeg
import zmq

from streampi import LABELS, ShapesGenerator
from streampi.client import Subscriber
from streampi.errors import ProtocolError
from streampi.protocol import (
    ERRORS_TOPIC,
    MAX_ERROR_MESSAGE_BYTES,
    Limits,
    decode_frame,
    encode_frame,
    encode_result,
    error_result,
)
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, start_server, wait_subscribed

MiB = 1024 * 1024
GOOD_HEAD = {"v": 1, "stream": "h", "seq": 7, "fmt": "rgb", "w": 4, "h": 4}
PIXELS = bytes(range(48))


@dataclass
class Hostile:
    """One malformed message: where its answer must come, and a phrase the answer holds."""

    name: str
    parts: list[bytes]
    topic: str  # "_errors" or the stream it is answered on
    phrase: str
    by_worker: bool = False  # found bad only when a worker decodes it (JPEG body)
    wire: bool = True  # a ZeroMQ message cannot have 0 parts: decoder-only


def head(**changes: Any) -> bytes:
    """A valid header with fields changed; a value of ``...`` removes the field."""
    h = {**GOOD_HEAD, **changes}
    return msgpack.packb({k: v for k, v in h.items() if v is not ...}, use_bin_type=True)


def packed_map(*items: tuple[bytes, bytes]) -> bytes:
    """A msgpack map from already packed keys and values (for values msgpack cannot pack)."""
    return bytes([0x80 | len(items)]) + b"".join(k + v for k, v in items)


def pk(v: Any) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def valid_items(**changes: Any) -> list[tuple[bytes, bytes]]:
    h = {**GOOD_HEAD, **changes}
    return [(pk(k), pk(v)) for k, v in h.items() if v is not ...]


def _jpeg(w: int, h: int, gray: bool = False, quality: int = 80) -> bytes:
    if gray:
        return simplejpeg.encode_jpeg(np.zeros((h, w, 1), np.uint8), colorspace="GRAY", quality=quality)
    rgb, _ = ShapesGenerator(seed=3).frame(w, h)
    return simplejpeg.encode_jpeg(rgb, quality=quality)


def _with_sof_size(jpeg: bytes, w: int, h: int) -> bytes:
    """The same JPEG with the size in its start-of-frame marker rewritten (a lying header)."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[:i + 5] + struct.pack(">HH", h, w) + jpeg[i + 9:]


def _fake_marker_message(filler: bytes) -> bytes:
    """A one-part message whose bin marker sits inside a string and claims the rest of the
    message, followed by ``filler``: a decoder that trusted the marker would skip the filler."""
    fake = b"\xc6" + bytes(4)  # its length is patched below
    msg = packed_map(*valid_items(), (pk("junk"), pk(fake)), (pk("data"), filler))
    at = msg.index(fake)
    return msg[:at + 1] + (len(msg) - at - 5).to_bytes(4, "big") + msg[at + 5:]


def build_corpus() -> list[Hostile]:
    jpeg = _jpeg(64, 48)
    deep = b"\x91" * 100_000 + b"\xc0"  # 100 000 nested one-element arrays
    tiny = b"\xdd" + struct.pack(">I", 10**6) + b"\x80" * 10**6  # an array of 10^6 empty maps
    nested_meta: Any = "leaf"
    for _ in range(40):
        nested_meta = {"k": nested_meta}
    c = [
        Hostile("not msgpack", [b"\xc1garbage"], ERRORS_TOPIC, "not a msgpack map"),
        Hostile("empty part", [b""], ERRORS_TOPIC, "not a msgpack map"),
        Hostile("msgpack array", [pk([1, 2, 3]), PIXELS], ERRORS_TOPIC, "must be a msgpack map"),
        Hostile("msgpack int", [pk(12345)], ERRORS_TOPIC, "must be a msgpack map"),
        Hostile("msgpack nil", [pk(None), PIXELS], ERRORS_TOPIC, "must be a msgpack map"),
        Hostile("map with int keys", [pk({1: 2, 3: 4}), PIXELS], ERRORS_TOPIC, "msgpack map"),
        # every field missing in turn
        Hostile("missing v", [head(v=...), PIXELS], "h", "v must be"),
        Hostile("missing stream", [head(stream=...), PIXELS], ERRORS_TOPIC, "stream must be"),
        Hostile("missing seq", [head(seq=...), PIXELS], "h", "seq must be"),
        Hostile("missing fmt", [head(fmt=...), PIXELS], "h", "fmt must be"),
        Hostile("missing w", [head(w=...), PIXELS], "h", "width must be"),
        Hostile("missing h", [head(h=...), PIXELS], "h", "height must be"),
        Hostile("missing data", [head()], "h", "data is required"),
        # every field of the wrong type
        Hostile("v as str", [head(v="1"), PIXELS], "h", "v must be"),
        Hostile("stream as int", [head(stream=5), PIXELS], ERRORS_TOPIC, "stream must be"),
        Hostile("seq as str", [head(seq="7"), PIXELS], "h", "seq must be"),
        Hostile("fmt as int", [head(fmt=3), PIXELS], "h", "fmt must be"),
        Hostile("w as str", [head(w="4"), PIXELS], "h", "w (width) must be"),
        Hostile("h as float", [head(h=4.0), PIXELS], "h", "h (height) must be"),
        Hostile("ts as str", [head(ts="noon"), PIXELS], "h", "ts must be a number"),
        Hostile("meta as list", [head(meta=[1, 2]), PIXELS], "h", "meta must be a map"),
        Hostile("data as str", [head(data="x" * 48)], "h", "data must be bin"),
        Hostile("data in both parts", [head(data=PIXELS), PIXELS], "h", "must not be in the header"),
        # sizes
        Hostile("negative w", [head(w=-4), PIXELS], "h", "must be positive"),
        Hostile("zero h", [head(h=0), PIXELS], "h", "must be positive"),
        Hostile("huge w and h", [head(w=2**40, h=2**40), PIXELS], "h", "exceeds the limit"),
        Hostile("w and h at uint64 max", [head(w=2**64 - 1, h=2**64 - 1), PIXELS], "h", "exceeds the limit"),
        Hostile("h at int64 min", [head(h=-(2**63)), PIXELS], "h", "must be positive"),
        Hostile("payload one byte short", [head(), PIXELS[:-1]], "h", "needs 48 bytes, got 47"),
        Hostile("payload one byte long", [head(), PIXELS + b"x"], "h", "needs 48 bytes, got 49"),
        Hostile("one-part payload one byte short", [head(data=PIXELS[:-1])], "h", "needs 48 bytes, got 47"),
        # parts
        Hostile("0 parts", [], ERRORS_TOPIC, "1 or 2 parts", wire=False),
        Hostile("3 parts", [head(), PIXELS, b"more"], ERRORS_TOPIC, "1 or 2 parts"),
        Hostile("100 parts", [head(), PIXELS, *[b"p"] * 98], ERRORS_TOPIC, "1 or 2 parts"),
        # sizes of the header itself
        Hostile("one-part header of 32 MiB", [packed_map(*valid_items(), (pk("junk"), pk("x" * (32 * MiB - 1024))))],
                ERRORS_TOPIC, "one-part message of"),
        Hostile("two-part header of 1 MiB", [head(junk="x" * MiB), PIXELS], ERRORS_TOPIC, "header part of"),
        Hostile("100 000 nested arrays as the header", [deep], ERRORS_TOPIC, "one-part message of"),
        Hostile("100 000 nested maps as the header", [b"\x81\xa1k" * 100_000 + b"\xc0"], ERRORS_TOPIC,
                "one-part message of"),
        Hostile("5000 nested arrays as the header", [deep[-5001:]], ERRORS_TOPIC, "must be a msgpack map"),
        Hostile("5000 nested maps as the header", [b"\x81\xa1k" * 5000 + b"\xc0"], ERRORS_TOPIC,
                "nested too deeply"),
        Hostile("5000 levels deep in a field", [packed_map(*valid_items(), (pk("junk"), deep[-5001:])), PIXELS],
                ERRORS_TOPIC, "nested too deeply"),
        Hostile("100 000 levels deep in a field", [packed_map(*valid_items(), (pk("junk"), deep)), PIXELS],
                ERRORS_TOPIC, "header part of"),
        Hostile("100 000 levels deep beside data", [packed_map(*valid_items(data=PIXELS), (pk("junk"), deep))],
                ERRORS_TOPIC, "one-part message of"),
        Hostile("10^6 tiny containers (one part)", [packed_map(*valid_items(data=PIXELS), (pk("junk"), tiny))],
                ERRORS_TOPIC, "one-part message of"),
        Hostile("10^6 tiny containers beside a large data", [packed_map(*valid_items(fmt="gray", w=1024, h=1024),
                                                                       (pk("junk"), tiny), (pk("data"), pk(bytes(MiB))))],
                ERRORS_TOPIC, "one-part message of"),
        Hostile("a fake data marker, then 10^6 tiny containers", [_fake_marker_message(tiny)], ERRORS_TOPIC,
                "msgpack map"),
        Hostile("10^6 tiny containers (two parts)", [packed_map(*valid_items(), (pk("junk"), tiny)), PIXELS],
                ERRORS_TOPIC, "header part of"),
        Hostile("bin claiming 4 GiB", [packed_map(*valid_items(), (pk("data"), b"\xc6\xff\xff\xff\xf0abc"))],
                ERRORS_TOPIC, "not a msgpack map"),
        Hostile("str claiming 4 GiB", [packed_map((pk("v"), pk(1)), (pk("stream"), b"\xdb\xff\xff\xff\xf0abc"))],
                ERRORS_TOPIC, "not a msgpack map"),
        Hostile("map claiming 2^32 entries", [b"\xdf\xff\xff\xff\xff" + pk("v") + pk(1)], ERRORS_TOPIC,
                "not a msgpack map"),
        # stream ids
        Hostile("non-UTF-8 stream", [packed_map(*valid_items(stream=...), (pk("stream"), b"\xa3\xff\xfe\xfd")),
                                     PIXELS], ERRORS_TOPIC, "not a msgpack map"),
        Hostile("stream of 65 characters", [head(stream="s" * 65), PIXELS], ERRORS_TOPIC, "stream must be"),
        Hostile("stream of 10 000 characters", [head(stream="s" * 10_000), PIXELS], ERRORS_TOPIC, "stream must be"),
        Hostile("stream _errors", [head(stream="_errors"), PIXELS], ERRORS_TOPIC, "stream must be"),
        Hostile("stream _hidden", [head(stream="_hidden"), PIXELS], ERRORS_TOPIC, "stream must be"),
        Hostile("stream with a slash", [head(stream="a/b"), PIXELS], ERRORS_TOPIC, "stream must be"),
        # ts
        Hostile("ts NaN", [head(ts=float("nan")), PIXELS], "h", "ts must be a finite number"),
        Hostile("ts infinite", [head(ts=float("inf")), PIXELS], "h", "ts must be a finite number"),
        Hostile("ts negative", [head(ts=-1.0), PIXELS], "h", "ts must be a finite number"),
        # meta
        Hostile("meta of 8 KiB", [head(meta={"k": "x" * 8192}), PIXELS], "h", "meta of"),
        Hostile("meta 40 levels deep", [head(meta=nested_meta), PIXELS], "h", "nested deeper than"),
        Hostile("meta 100 000 levels deep", [packed_map(*valid_items(), (pk("meta"), b"\x81\xa1k" + deep)), PIXELS],
                ERRORS_TOPIC, "header part of"),
        Hostile("meta with int keys", [head(meta={1: "x"}), PIXELS], "h", "meta must be a map"),
        # version and format
        Hostile("unknown version", [head(v=2), PIXELS], "h", "unsupported protocol version"),
        Hostile("unknown version, other fields", [pk({"v": 99, "stream": "h", "seq": 7, "what": 1})], "h",
                "unsupported protocol version"),
        Hostile("unknown fmt", [head(fmt="png"), PIXELS], "h", "fmt must be"),
        Hostile("odd-sized I420", [head(fmt="i420", w=5, h=4), bytes(5 * 4 + 2 * 2 * 2)], "h", "even width"),
        Hostile("odd-sized NV12", [head(fmt="nv12", w=4, h=3), bytes(4 * 3 + 2 * 2 * 1)], "h", "even width"),
        # seq
        Hostile("seq negative", [head(seq=-1), PIXELS], "h", "seq must be"),
        Hostile("seq beyond 2^64 (float)", [head(seq=2.0**64), PIXELS], "h", "seq must be"),
        Hostile("seq beyond 2^64 (bin)", [head(seq=b"\x01" + bytes(8)), PIXELS], "h", "seq must be"),
        Hostile("seq as ext", [packed_map(*valid_items(seq=...), (pk("seq"), b"\xd4\x05\x01")), PIXELS], "h",
                "seq must be"),
        # JPEGs
        Hostile("empty JPEG", [head(fmt="jpeg", w=..., h=...), b""], "h", "empty JPEG"),
        Hostile("JPEG of 2 bytes", [head(fmt="jpeg", w=..., h=...), b"\xff\xd8"], "h", "JPEG"),
        Hostile("not a JPEG", [head(fmt="jpeg", w=..., h=...), b"GIF89a" + bytes(100)], "h", "JPEG"),
        Hostile("corrupt JPEG header", [head(fmt="jpeg", w=..., h=...), jpeg[:200] + bytes(200) + jpeg[400:]], "h",
                "JPEG"),
        Hostile("truncated JPEG", [head(fmt="jpeg", w=..., h=...), jpeg[: len(jpeg) // 2]], "h", "JPEG",
                by_worker=True),
        Hostile("JPEG claiming 60000x60000", [head(fmt="jpeg", w=..., h=...), _with_sof_size(jpeg, 60000, 60000)],
                "h", "60000×60000"),
        Hostile("JPEG claiming 0x0", [head(fmt="jpeg", w=..., h=...), _with_sof_size(jpeg, 0, 0)], "h", "JPEG"),
        Hostile("JPEG bomb (8192x4096 of one colour)", [head(fmt="jpeg", w=..., h=...), _jpeg(8192, 4096, gray=True,
                                                                                            quality=10)],
                "h", "8192×4096"),
    ]
    return c


CORPUS = build_corpus()
WIRE_CORPUS = [h for h in CORPUS if h.wire]


def test_corpus_is_large_and_names_are_unique():
    assert len(WIRE_CORPUS) >= 40
    assert len({h.name for h in CORPUS}) == len(CORPUS)
    assert any(len(b"".join(h.parts)) > 30 * MiB for h in CORPUS)


@pytest.mark.parametrize("hostile", [h for h in CORPUS if not h.by_worker], ids=lambda h: h.name)
def test_decoder_refuses(hostile: Hostile):
    with pytest.raises(ProtocolError) as info:
        decode_frame(hostile.parts)
    err = info.value
    assert hostile.phrase in str(err)
    assert (err.stream or ERRORS_TOPIC) == hostile.topic  # type: ignore[attr-defined]
    if hostile.topic != ERRORS_TOPIC and "seq" not in hostile.name:
        assert err.seq == GOOD_HEAD["seq"]  # type: ignore[attr-defined]
    answer = encode_result(error_result("bad_frame", str(err), err.stream, err.seq))  # type: ignore[attr-defined]
    assert sum(map(len, answer)) <= 1024, len(answer[1])


def test_truncated_jpeg_passes_the_header_check_and_fails_in_the_worker():
    (truncated,) = [h for h in CORPUS if h.name == "truncated JPEG"]
    msg = decode_frame(truncated.parts)
    assert msg.fmt == "jpeg" and msg.stream == "h"


def _push(endpoint: str) -> zmq.Socket:
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.setsockopt(zmq.SNDTIMEO, 10_000)
    push.connect(endpoint)
    return push


def _good_frame(seq: int) -> tuple[list, str]:
    rgb, label = ShapesGenerator(seed=seq).frame(64, 64)
    return encode_frame("good", seq, "rgb", rgb, 64, 64), LABELS[label]


def send_corpus_and_check(push: zmq.Socket, sub: Subscriber, corpus: list[Hostile], *, check_phrase: bool = True,
                          good_every: int = 1, seq0: int = 0) -> int:
    """Send each message, wait for its answer and check it; every ``good_every`` messages also
    send a valid frame and check it is served. Returns the number of answers checked."""
    answered = 0
    for i, hostile in enumerate(corpus):
        push.send_multipart(hostile.parts)
        r = sub.recv(timeout=30)
        assert r["ok"] is False and r["error"]["code"] == "bad_frame", (hostile.name, r)
        assert r["stream"] == hostile.topic, (hostile.name, r["stream"], r["error"]["message"])
        if check_phrase:
            assert hostile.phrase in r["error"]["message"], (hostile.name, r["error"]["message"])
        assert len(r["error"]["message"].encode()) <= MAX_ERROR_MESSAGE_BYTES
        answered += 1
        if good_every and i % good_every == 0:
            parts, label = _good_frame(seq0 + i)
            push.send_multipart(parts)
            r = sub.recv(timeout=30)
            assert r["ok"] and r["stream"] == "good" and r["top"][0][1] == label, (hostile.name, r)
    return answered


def test_server_answers_every_hostile_message_and_keeps_serving():
    with ServerThread("shapes_int8", ServerOptions(workers=1, max_batch=1)) as st:
        with Subscriber(st.results) as sub:
            wait_subscribed(sub, st.frames)
            push = _push(st.frames_v1)
            try:
                answered = send_corpus_and_check(push, sub, WIRE_CORPUS)
            finally:
                push.close()
            stats = dict(st.stats)
    assert answered == len(WIRE_CORPUS)
    # + the probes wait_subscribed sent; every message received was answered
    assert stats["received"] == stats["answered"]
    assert stats["ok"] == len(WIRE_CORPUS)


def test_header_limit_applies_to_one_part_messages_alike():
    small = Limits(max_header_bytes=64)
    parts = [head(data=PIXELS, meta={"k": "x" * 100})]
    with pytest.raises(ProtocolError, match="one-part message of"):
        decode_frame(parts, Limits(max_header_bytes=64, max_meta_bytes=4096))
    # the same header with a large payload is fine: only the header is counted
    big = encode_frame("h", 1, "rgb", np.zeros((64, 64, 3), np.uint8), 64, 64, two_part=False)
    assert decode_frame(big, small).width == 64


def _rss_over_corpus(rounds: int) -> list[int]:
    """RSS of a ``streampi serve`` process after each round of the whole corpus."""
    proc, info = start_server(["--workers", "1", "--max-batch", "1", "--bind", "tcp://127.0.0.1:0",
                               "--publish", "tcp://127.0.0.1:0"])
    try:
        ps = psutil.Process(proc.pid)
        samples = []
        with Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["bind"])
            push = _push(info["bind"])
            try:
                deadline = time.monotonic() + 60 * rounds
                for k in range(rounds):
                    assert time.monotonic() < deadline, f"only {k} rounds in time"
                    send_corpus_and_check(push, sub, WIRE_CORPUS, check_phrase=False, good_every=len(WIRE_CORPUS),
                                          seq0=k * len(WIRE_CORPUS))
                    samples.append(ps.memory_info().rss)
            finally:
                push.close()
        return samples
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0


def _check_flat(samples: list[int]) -> None:
    settled = samples[1:]  # the first round warms the allocator up
    lo, hi = min(settled), max(settled)
    print(f"RSS over {len(samples)} rounds of {len(WIRE_CORPUS)} messages: first {samples[0] / MiB:.1f} MiB, "
          f"min {lo / MiB:.1f} MiB, max {hi / MiB:.1f} MiB, last {samples[-1] / MiB:.1f} MiB")
    assert hi <= lo * 1.10, [round(s / MiB, 1) for s in samples]


def test_resident_memory_stays_flat_over_the_corpus_10x():
    _check_flat(_rss_over_corpus(10))


@pytest.mark.slow
def test_resident_memory_stays_flat_over_the_corpus_100x():
    _check_flat(_rss_over_corpus(100))


def test_refusals_leave_no_reference_cycles():
    """A refused message must be freed at once, not at the next GC pass: an exception kept in a
    local forms a cycle with its traceback, which held 1 MiB messages (seen as RSS growth)."""
    decodable = [h for h in CORPUS if not h.by_worker]
    gc.collect()
    gc.disable()
    try:
        for hostile in decodable:
            try:
                decode_frame(hostile.parts)
            except ProtocolError:
                pass
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable == 0
