"""The two flavours of the clients have the same shape: ``async with``, ``close(flush_timeout=)``
and ``linger=`` work on the asyncio flavour as on the blocking one.

Where a test needs a server that answers only when told, it is a ROUTER written here from
docs/protocol.md (protocol v1.1), on loopback."""

from __future__ import annotations

import asyncio
import threading

import msgpack
import numpy as np
import pytest
import zmq
import zmq.asyncio

from streampi.client import AsyncProducer, AsyncSubscriber, Producer
from streampi.serving import ServerOptions
from streampi.testing import ServerThread

FRAME = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)


class RawServer:
    """Grants each producer a window of one frame (policy latest) and answers the frames it
    received only once ``answering`` is set."""

    def __init__(self) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.seqs: list[int] = []  # of the frames received, in order
        self.byes = 0
        self.answering = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _credit(self, peer: bytes, acked: int) -> None:
        body = {"session": "s1", "window": 1, "acked": acked, "policy": "latest"}
        self.sock.send_multipart([peer, b"credit", msgpack.packb(body)])

    def _run(self) -> None:
        peer, acked = None, 0
        while not self._stop.is_set():
            if self.sock.poll(20):
                peer, kind, *rest = self.sock.recv_multipart()
                if kind == b"frame":
                    self.seqs.append(msgpack.unpackb(rest[0])["seq"])
                elif kind == b"bye":
                    self.byes += 1
                else:
                    self._credit(peer, acked)
            if peer is not None and self.answering.is_set() and acked < len(self.seqs):
                acked = len(self.seqs)
                self._credit(peer, acked)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()


@pytest.fixture
def raw_server():
    server = RawServer()
    yield server
    server.close()


async def _hold_one(cam: AsyncProducer, server: RawServer) -> None:
    """Frame 0 in flight (received by ``server``), frame 1 held back, replaced by frame 2."""
    for _ in range(3):
        await cam.send(FRAME, timeout=10)
    assert cam.held == 2 and cam.dropped == 1
    for _ in range(1000):  # bounded: frame 0 reaches the server
        if server.seqs:
            break
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", ["aclose", "close", "async with"])
def test_the_async_producer_flushes_its_held_frame_on_close(raw_server, how):
    async def go() -> dict:
        cam = AsyncProducer(raw_server.endpoint, stream="cam", linger=0)
        if how == "async with":
            async with cam:
                await _hold_one(cam, raw_server)
                raw_server.answering.set()
        else:
            await _hold_one(cam, raw_server)
            raw_server.answering.set()
            if how == "aclose":
                await cam.aclose(flush_timeout=10)
            else:
                cam.close(flush_timeout=10)
        return cam.stats()

    stats = asyncio.run(go())
    assert raw_server.seqs == [0, 2]
    assert (stats["held"], stats["dropped"], stats["in_flight"], stats["sent"]) == (None, 1, 0, 2)


def test_the_async_producer_closed_at_once_drops_its_held_frame(raw_server):
    async def go() -> dict:
        cam = AsyncProducer(raw_server.endpoint, stream="cam", linger=0)
        await _hold_one(cam, raw_server)
        cam.close()
        return cam.stats()

    stats = asyncio.run(go())
    assert (stats["held"], stats["dropped"]) == (None, 2) and raw_server.seqs == [0]


def test_async_with_on_a_server():
    async def go(st: ServerThread) -> list[dict]:
        async with AsyncSubscriber(st.results, streams=["cam"]) as sub, \
                AsyncProducer(st.frames, stream="cam") as cam:
            got: list[dict] = []
            for _ in range(50):  # until the subscription has reached the server (bounded)
                await cam.send(FRAME, timeout=10)
                try:
                    got.append(await sub.recv(timeout=0.2))
                except TimeoutError:
                    continue
                break
        with pytest.raises(zmq.ZMQError):  # both are closed
            await sub.recv(timeout=1)
        return got

    with ServerThread(options=ServerOptions(workers=1, policy="queue")) as st:
        got = asyncio.run(go(st))
    assert got and got[0]["ok"] and got[0]["stream"] == "cam"


@pytest.mark.parametrize("cls", [Producer, AsyncProducer])
@pytest.mark.parametrize("protocol_version", ["1", "1.1"])
def test_linger_zero_lets_the_context_end_with_frames_unsent(cls, protocol_version):
    """No server listens: with ``linger=0`` the frames ZeroMQ still holds are discarded on
    close, so terminating the context returns (with ``linger=None`` it would wait for ever)."""
    with zmq.Context() as probe:  # a port nobody listens on
        sock = probe.socket(zmq.PULL)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        sock.close(linger=0)
    ctx = zmq.asyncio.Context() if cls is AsyncProducer else zmq.Context()
    cam = cls(f"tcp://127.0.0.1:{port}", stream="cam", protocol_version=protocol_version, context=ctx, linger=0,
              handshake_timeout=0.2)
    try:  # v1: the frame is queued in ZeroMQ; v1.1: the hellos are, and no credit comes
        sent = cam.send(FRAME, timeout=5)
        if cls is AsyncProducer:
            asyncio.run(sent)
    except ConnectionError:
        assert protocol_version == "1.1"
    cam.close()
    ended = threading.Thread(target=ctx.term, daemon=True)
    ended.start()
    ended.join(30)
    assert not ended.is_alive()


@pytest.mark.parametrize("linger", [-1, float("nan")])
def test_linger_must_be_seconds_or_none(linger):
    with pytest.raises(ValueError, match="linger must be >= 0 seconds or None"):
        Producer("tcp://127.0.0.1:5999", stream="cam", linger=linger)
