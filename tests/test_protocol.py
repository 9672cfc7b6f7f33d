"""The wire protocol's pieces on their own: Limits, the bounded error text, round trips."""

from __future__ import annotations

import os
import signal

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from streampi import protocol, shared_frames
from streampi.client import Subscriber
from streampi.errors import ProtocolError
from streampi.protocol import (
    MAX_ERROR_MESSAGE_BYTES,
    Limits,
    bounded_repr,
    decode_frame,
    decode_result,
    encode_frame,
    encode_result,
    error_result,
    truncate_message,
)
from streampi.testing import start_server, wait_subscribed


def test_limits_refuse_nonsense():
    for bad in [{"max_pixels": 0}, {"max_meta_bytes": -1}, {"max_parts": 3}, {"max_header_bytes": True},
                {"max_message_bytes": 1.5}, {"max_message_bytes": 100, "max_header_bytes": 200}]:
        with pytest.raises(ValueError, match="limit"):
            Limits(**bad)


def test_every_limit_is_documented_for_the_command_line():
    from dataclasses import fields

    for f in fields(Limits):
        assert len(f.metadata.get("help", "")) > 10, f.name


def test_round_trip_of_every_field():
    rgb = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3)
    for two_part in (True, False):
        parts = encode_frame("cam-1.a", 2**64 - 1, "rgb", rgb, 6, 4, ts=12.5, meta={"k": [1, {"x": b"y"}]},
                             two_part=two_part)
        msg = decode_frame(parts)
        assert (msg.stream, msg.seq, msg.fmt, msg.width, msg.height, msg.ts) == ("cam-1.a", 2**64 - 1, "rgb", 6, 4,
                                                                                   12.5)
        assert msg.meta == {"k": [1, {"x": b"y"}]} and msg.has_meta
        assert bytes(msg.data) == rgb.tobytes()


@pytest.mark.skipif(not shared_frames.available(), reason="shared memory needs Linux memfds")
def test_a_frame_in_a_shared_memory_slot_round_trips_through_the_servers_decoder():
    """encode_frame(shm=(slot, ticket)) is the header alone; the server reads the pixels from
    that slot of the producer's ring."""
    rgb = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3)
    ring = shared_frames.Ring(3, rgb.nbytes)
    writer = shared_frames.RingWriter(shared_frames.RingOffer.from_wire(ring.offer_wire))
    try:
        slot, ticket = writer.write(rgb)
        parts = encode_frame("cam", 7, "rgb", rgb, 6, 4, ts=2.5, meta={"k": 1}, shm=(slot, ticket))
        assert len(parts) == 1 and msgpack.unpackb(parts[0])["shm"] == [slot, ticket]
        msg = decode_frame(parts, ring=ring)
        assert (msg.stream, msg.seq, msg.width, msg.height, msg.ts, msg.meta) == ("cam", 7, 6, 4, 2.5, {"k": 1})
        assert (msg.shm_slot, bytes(msg.data)) == (slot, rgb.tobytes()) and ring.held == {slot: ticket}
    finally:
        writer.close()
        ring.close()


def test_one_part_data_is_a_view_of_the_received_buffer():
    parts = encode_frame("c", 0, "gray", np.zeros((4, 4), np.uint8), 4, 4, two_part=False)
    buf = bytearray(parts[0])
    msg = decode_frame([buf])
    buf[-1] = 7  # the last byte of the message is the last pixel
    assert msg.data[-1] == 7


def test_unknown_keys_are_ignored_without_being_built():
    head = {"v": 1, "stream": "c", "seq": 0, "fmt": "gray", "w": 2, "h": 2, "future": {"a": [1, 2, 3]}}
    assert decode_frame([msgpack.packb(head), b"abcd"]).stream == "c"


def test_integer_ts_is_read_as_a_number():
    head = {"v": 1, "stream": "c", "seq": 0, "fmt": "gray", "w": 2, "h": 2, "ts": 1700000000}
    assert decode_frame([msgpack.packb(head), b"abcd"]).ts == 1700000000.0


def test_bounded_repr_and_truncation():
    assert len(bounded_repr("x" * 10**6)) < 60
    assert len(bounded_repr([[[["deep"] * 100]]] * 100)) < 120
    text = "é" * 1000  # 2 bytes each: the cut must not split one
    cut = truncate_message(text, 101)
    assert len(cut.encode()) <= 101 and cut.endswith("...") and cut.startswith("é")
    assert truncate_message("short") == "short"


def test_error_answers_stay_under_1_kib():
    result = error_result("bad_frame", "x" * 10**5, "s" * 64, 2**64 - 1, ts=1.0)
    assert len(result["error"]["message"].encode()) <= MAX_ERROR_MESSAGE_BYTES
    assert sum(map(len, encode_result(result))) < 1024


def test_error_message_quotes_a_long_stream_briefly():
    head = {"v": 1, "stream": "s" * 100_000, "seq": 0, "fmt": "gray", "w": 2, "h": 2}
    with pytest.raises(ProtocolError) as info:
        decode_frame([msgpack.packb(head), b"abcd"], Limits(max_header_bytes=200_000))
    assert len(str(info.value)) < 200


def test_serve_takes_limits_from_the_command_line():
    proc, info = start_server(["--workers", "1", "--bind", "tcp://127.0.0.1:0", "--publish", "tcp://127.0.0.1:0",
                               "--max-pixels", "100", "--max-meta-bytes", "16"])
    try:
        with Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["bind"])
            push = zmq.Context.instance().socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 1000)
            push.connect(info["bind"])
            push.send_multipart(encode_frame("big", 0, "gray", np.zeros((11, 10), np.uint8), 10, 11))
            push.send_multipart(encode_frame("meta", 0, "gray", np.zeros((4, 4), np.uint8), 4, 4,
                                             meta={"k": "x" * 20}))
            push.send_multipart(encode_frame("fine", 0, "gray", np.zeros((10, 10), np.uint8), 10, 10))
            push.close()
            got = {r["stream"]: r for r in (sub.recv(timeout=30) for _ in range(3))}
        assert "exceeds the limit of 100 pixels" in got["big"]["error"]["message"]
        assert "exceeds the limit of 16" in got["meta"]["error"]["message"]
        assert got["fine"]["ok"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0


@pytest.mark.parametrize("data_first", [True, False])
def test_large_one_part_message_with_decoy_bin_markers(data_first):
    """A one-part message bigger than the header limit is found by its data's bin marker; bytes
    that look like markers elsewhere (here in a string and in meta) do not mislead it."""
    pixels = np.random.default_rng(0).integers(0, 256, 300 * 200, np.uint8).tobytes()
    decoy = b"\xc6" + (len(pixels) + 40).to_bytes(4, "big")
    items = [("v", 1), ("stream", "cam"), ("seq", 3), ("fmt", "gray"), ("w", 300), ("h", 200),
             ("meta", {"note": decoy.decode("latin-1"), "b": decoy})]
    items.insert(0 if data_first else len(items), ("data", pixels))
    packed = msgpack.packb(dict(items), use_bin_type=True)
    msg = decode_frame([packed], Limits(max_header_bytes=256))
    assert msg.data.tobytes() == pixels and msg.meta["b"] == decoy and (msg.width, msg.height) == (300, 200)
    # the same message with one header field of the wrong type is refused, and answered on its stream
    items[[k for k, _ in items].index("seq")] = ("seq", "3")
    with pytest.raises(ProtocolError, match="seq must be") as info:
        decode_frame([msgpack.packb(dict(items), use_bin_type=True)], Limits(max_header_bytes=256))
    assert info.value.stream == "cam"


#: what msgpack can carry, and what streampi's messages hold
PACKABLE = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=8), inner, max_size=20),
    max_leaves=40)


@given(PACKABLE)
def test_messages_are_packed_byte_for_byte_as_msgpack_packs_them(value):
    """The wire did not change when msgspec replaced msgpack-python: producers and servers of
    either kind read each other."""
    result = {"v": 1, "stream": "cam", "value": value}
    packed = protocol.encode_result(result)[1]
    assert packed == msgpack.packb(result, use_bin_type=True)
    assert decode_result([b"cam", packed]) == msgpack.unpackb(packed, raw=False)


def test_frames_hellos_and_credit_are_packed_as_msgpack_packs_them():
    rgb = np.zeros((4, 6, 3), np.uint8)
    head = {"v": 1, "stream": "c", "seq": 2**40, "fmt": "rgb", "w": 6, "h": 4, "ts": 1.25,
            "meta": {"k": [1, -2, 0.5, b"x", None, True]}}
    assert encode_frame("c", 2**40, "rgb", rgb, 6, 4, ts=1.25, meta=head["meta"])[0] == msgpack.packb(head)
    one_part = encode_frame("c", 2**40, "rgb", rgb, 6, 4, ts=1.25, meta=head["meta"], two_part=False)
    assert one_part == [msgpack.packb({**head, "data": rgb.tobytes()})]
    assert protocol.encode_hello("c", 4096) == [b"hello", msgpack.packb({"v": 1, "stream": "c", "shm": 4096})]
    credit = protocol.Credit("s", 3, 1, "queue", {"pid": 1, "token": b"t" * 16}, 2, (0, 1))
    body = {"session": "s", "window": 3, "acked": 1, "policy": "queue", "shm": {"pid": 1, "token": b"t" * 16},
            "shm_seen": 2, "shm_held": [0, 1]}
    assert protocol.encode_credit(credit) == [b"credit", msgpack.packb(body)]
    assert protocol.encode_result({"stream": "c", "score": np.float64(0.5)})[1] == msgpack.packb(
        {"stream": "c", "score": 0.5})  # NumPy's float64 is a float: packed as one


@pytest.mark.parametrize("body", [b"\xc1", msgpack.packb({"a": 1})[:-1], msgpack.packb([1] * 3) + b"\x00"])
def test_a_result_that_is_not_msgpack_is_a_protocol_error(body):
    with pytest.raises(ProtocolError, match="a result's second part must be a msgpack map"):
        decode_result([b"cam", body])
