"""The server end to end: real ZeroMQ sockets on 127.0.0.1, real interpreters, real models."""

from __future__ import annotations

import collections
import time

import cv2
import msgpack
import numpy as np
import pytest
import simplejpeg
import zmq

from streampi import LABELS, Model, ShapesGenerator, bundled_model, load_config
from streampi.client import AsyncProducer, AsyncSubscriber, Producer, Subscriber
from streampi.preprocess import Preprocessor
from streampi.protocol import encode_frame, output_arrays
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, wait_subscribed


def collect(sub: Subscriber, n: int, timeout: float = 30.0) -> list[dict]:
    """Receive ``n`` results (bounded in time)."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} results arrived"
        out.append(sub.recv(timeout=left))
    return out


def assert_no_more(sub: Subscriber, wait: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        extra = sub.recv(timeout=wait)
        print("unexpected extra result", extra)


@pytest.fixture(scope="module", params=["process", "thread"])
def server(request):
    with ServerThread("shapes_int8", ServerOptions(workers=2, policy="queue", max_batch=4,
                                                   isolation=request.param), decoder={"raw_outputs": True}) as st:
        yield st


def test_classifier_results_carry_no_raw_scores_unless_asked():
    with ServerThread("shapes_int8", ServerOptions(workers=1)) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream="small") as prod:
            prod.send(ShapesGenerator(seed=2).frame(160, 120)[0])
        r = sub.recv(timeout=10)
    assert r["ok"] and r["top"] and "outputs" not in r


@pytest.fixture
def sub(server):
    with Subscriber(server.results) as s:
        wait_subscribed(s, server.frames)
        yield s


def as_format(rgb: np.ndarray, fmt: str):
    """(payload, fmt) of a frame in each wire format."""
    if fmt == "rgb":
        return rgb
    if fmt == "bgr":
        return np.ascontiguousarray(rgb[..., ::-1])
    if fmt in ("rgba", "bgra"):
        base = rgb if fmt == "rgba" else rgb[..., ::-1]
        return np.dstack([base, np.full(rgb.shape[:2], 255, np.uint8)])
    if fmt == "gray":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if fmt == "i420":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    if fmt == "nv12":
        i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        h, w = rgb.shape[:2]
        u = i420[h:h + h // 4].reshape(-1)
        v = i420[h + h // 4:].reshape(-1)
        return np.concatenate([i420[:h].reshape(-1), np.stack([u, v], 1).reshape(-1)]).reshape(h * 3 // 2, w)
    if fmt == "jpeg":
        return simplejpeg.encode_jpeg(rgb, quality=92)
    raise ValueError(fmt)


@pytest.mark.aarch64
@pytest.mark.parametrize("two_part", [True, False])
def test_round_trip_every_format(server, sub, two_part):
    gen = ShapesGenerator(seed=11)
    fmts = ("rgb", "bgr", "rgba", "bgra", "gray", "i420", "nv12", "jpeg")
    sent = {}
    with Producer(server.frames, stream=f"fmt{int(two_part)}", two_part=two_part) as prod:
        for i, fmt in enumerate(fmts * 3):
            rgb, label = gen.frame(320, 240)
            seq = prod.send(as_format(rgb, fmt), fmt=fmt, meta={"i": i, "fmt": fmt})
            sent[seq] = (fmt, label)
    results = collect(sub, len(sent))
    assert_no_more(sub)
    by_seq = {r["seq"]: r for r in results}
    assert set(by_seq) == set(sent)
    correct = collections.Counter()
    for seq, (fmt, label) in sent.items():
        r = by_seq[seq]
        assert r["ok"], r
        assert r["meta"]["fmt"] == fmt and r["stream"] == f"fmt{int(two_part)}"
        (scores,) = output_arrays(r)
        assert scores.shape == (len(LABELS),) and scores.dtype == np.float32
        assert [t[0] for t in r["top"]] == list(np.argsort(-scores, kind="stable")[:3])
        assert set(r["timing"]) >= {"recv", "queue_ms", "pre_ms", "infer_ms", "post_ms", "total_ms"}
        assert r["model"]["name"] == "shapes_int8" and len(r["model"]["sha256"]) == 12
        correct[fmt] += r["top"][0][1] == LABELS[label]
    for fmt in ("rgb", "bgr", "rgba", "bgra", "i420", "nv12", "jpeg"):
        assert correct[fmt] == 3, (fmt, correct)


@pytest.mark.aarch64
def test_pipeline_accuracy_equals_direct_interpreter(server, sub):
    gen = ShapesGenerator(seed=2026)
    frames, labels = gen.batch(150, 320, 240)
    # direct: the same kernel, the interpreter alone
    model = Model(bundled_model("shapes_int8"))
    pre = Preprocessor.for_model(model, load_config(model.path))
    direct = []
    for f in frames:
        x, _ = pre(f, "rgb")
        direct.append(int(np.argmax(model.run(x[None])[0][0])))
    with Producer(server.frames, stream="acc") as prod:
        for f in frames:
            prod.send(f)
    results = {r["seq"]: r for r in collect(sub, len(frames))}
    piped = [results[i]["top"][0][0] for i in range(len(frames))]
    acc_direct = np.mean(np.array(direct) == labels)
    acc_pipe = np.mean(np.array(piped) == labels)
    print(f"accuracy direct {acc_direct:.3f} pipeline {acc_pipe:.3f}")
    assert acc_pipe == acc_direct >= 0.95
    assert piped == direct


def _run_many(server_opts: ServerOptions, n_streams: int, per_stream: int, model="shapes_int8", protocol="1.1"):
    """Send; return the results, the server's counters and the frames the producers replaced
    for want of credit (v1.1, latest: they never reach the server)."""
    gen = ShapesGenerator(seed=7)
    frame, _ = gen.frame(160, 120)
    with ServerThread(model, server_opts) as st, Subscriber(st.results) as sub:
        endpoint = st.frames if protocol == "1.1" else st.frames_v1
        wait_subscribed(sub, endpoint)
        replaced: list[tuple[str, int]] = []
        prods = [Producer(endpoint, stream=f"s{i}", protocol_version=protocol,
                          on_drop=lambda seq, s=f"s{i}": replaced.append((s, seq))) for i in range(n_streams)]
        for _k in range(per_stream):
            for p in prods:
                p.send(frame)
        for p in prods:
            p.close()  # (a frame held for want of credit goes out, or counts as replaced)
        results = collect(sub, n_streams * per_stream - len(replaced), timeout=60)
        assert_no_more(sub)
        stats = dict(st.stats)
    return results, stats, replaced


@pytest.mark.parametrize("protocol", ["1.1", "1"])
@pytest.mark.parametrize("isolation", ["process", "thread"])
@pytest.mark.parametrize("policy", ["queue", "latest"])
def test_exactly_one_result_per_frame(policy, isolation, protocol):
    results, stats, replaced = _run_many(ServerOptions(workers=2, policy=policy, max_batch=4, queue_size=8,
                                                       isolation=isolation), 4, 60, protocol=protocol)
    per_stream = collections.defaultdict(list)
    for r in results:
        per_stream[r["stream"]].append(r["seq"])
    for stream, seq in replaced:
        per_stream[stream].append(seq)
    assert set(per_stream) == {f"s{i}" for i in range(4)}
    for seqs in per_stream.values():
        assert sorted(seqs) == list(range(60))  # every seq once, none twice: answered, or replaced at the camera
    codes = collections.Counter(r["error"]["code"] if not r["ok"] else "ok" for r in results)
    if policy == "queue" and protocol == "1.1":
        assert codes == {"ok": 240} and not replaced  # queue producers wait for credit
    elif policy == "queue":
        assert set(codes) <= {"ok", "overloaded"}  # v1: a full queue stream is answered, never waited for
    else:
        assert set(codes) <= {"ok", "dropped"}
    if protocol == "1":
        assert not replaced
    assert stats["answered"] == stats["received"]  # probes included
    assert stats.get("errors.double_settle", 0) == 0


def test_latest_policy_under_overload_drops_old_frames():
    """One slow worker, one stream sending far faster than it can serve: old frames are
    replaced (answered 'dropped'), the queue never holds more than one frame per stream,
    and what is served is always the newest frame at the time."""
    opts = ServerOptions(workers=1, policy="latest", max_batch=1)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    with ServerThread("mobilenet_v2_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames_v1)
        with Producer(st.frames_v1, stream="fast", protocol_version="1") as prod:  # v1: replaced at the server
            for _ in range(120):
                prod.send(rgb)
            results = collect(sub, 120, timeout=60)
        stats = dict(st.stats)
    ok = [r for r in results if r["ok"]]
    dropped = [r for r in results if not r["ok"]]
    assert ok and dropped
    assert {r["error"]["code"] for r in dropped} == {"dropped"}
    assert "replaced by a newer frame" in dropped[0]["error"]["message"]
    assert stats["max_pending"] == 1
    ok_seqs = [r["seq"] for r in ok]
    assert ok_seqs == sorted(ok_seqs) and ok_seqs[-1] == 119  # the newest frame is always served


BAD_MESSAGES = [
    ([b"\xc1"], "_errors", "not a msgpack map"),
    ([msgpack.packb([1, 2, 3])], "_errors", "must be a msgpack map"),
    ([msgpack.packb({"v": 2, "stream": "bad", "seq": 0})], "bad", "unsupported protocol version"),
    ([msgpack.packb({"v": 1, "stream": "_hidden", "seq": 0, "fmt": "rgb"})], "_errors", "stream must be"),
    ([msgpack.packb({"v": 1, "stream": "x" * 65, "seq": 0, "fmt": "rgb"})], "_errors", "stream must be"),
    ([msgpack.packb({"v": 1, "stream": "bad", "fmt": "rgb"})], "bad", "seq must be"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": -1, "fmt": "rgb"})], "bad", "seq must be"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 1, "fmt": "yuyv", "data": b"x"})], "bad", "fmt must be"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 2, "fmt": "rgb", "w": 10, "h": 10, "data": b"x" * 299})],
     "bad", "needs 300 bytes"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 3, "fmt": "i420", "w": 9, "h": 10, "data": b"x" * 135})],
     "bad", "even width"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 4, "fmt": "rgb", "w": 2, "h": 2, "data": b"x" * 12}),
      b"x" * 12], "bad", "must not be in the header"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 5, "fmt": "rgb", "w": 2, "h": 2})], "bad", "data is required"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 6, "fmt": "rgb", "w": 2, "h": 2}), b"x" * 12, b"more"],
     "_errors", "1 or 2 parts"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 7, "fmt": "jpeg", "meta": {"k": "x" * 5000}}), b"\xff\xd8"],
     "bad", "meta of"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 8, "fmt": "rgb", "w": 2, "h": 2, "ts": "noon"}), b"x" * 12],
     "bad", "ts must be a number"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 9, "fmt": "jpeg"}), b"\xff\xd8not really a jpeg"],
     "bad", "JPEG"),
    ([msgpack.packb({"v": 1, "stream": "bad", "seq": 10, "fmt": "rgb", "w": 100000, "h": 100000}), b"x"],
     "bad", "exceeds the limit"),
]


def test_malformed_frames_get_errors_and_server_keeps_serving(server, sub):
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(server.frames_v1)
    for parts, _, _ in BAD_MESSAGES:
        push.send_multipart(parts)
    results = collect(sub, len(BAD_MESSAGES))
    assert_no_more(sub)
    # answers on "_errors" come in order; answers on a stream are matched by seq (a JPEG is
    # only found bad by a worker, so its answer may overtake or trail the others)
    expected = collections.defaultdict(list)
    for parts, topic, match in BAD_MESSAGES:
        head = msgpack.unpackb(parts[0]) if parts[0][:1] != b"\xc1" else None
        seq = head.get("seq") if isinstance(head, dict) and topic != "_errors" else None
        expected[(topic, seq if isinstance(seq, int) and seq >= 0 else None)].append(match)
    for r in results:
        assert r["ok"] is False and r["error"]["code"] == "bad_frame"
        match = expected[(r["stream"], None if r["stream"] == "_errors" else r["seq"])].pop(0)
        assert match in r["error"]["message"], (match, r["error"]["message"])
    assert not any(expected.values())
    # and a good frame afterwards is served as usual
    rgb, label = ShapesGenerator(seed=1).frame(64, 64)
    push.send_multipart(encode_frame("good", 0, "rgb", rgb, 64, 64))
    (r,) = collect(sub, 1)
    assert r["ok"] and r["stream"] == "good" and r["top"][0][1] == LABELS[label]
    push.close()


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_graceful_stop_answers_every_accepted_frame(isolation):
    opts = ServerOptions(workers=1, policy="queue", queue_size=1000, max_batch=2, stop_timeout=30,
                         isolation=isolation)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    st = ServerThread("mobilenet_v2_int8", opts).start()
    with Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream="stop") as prod:
            for _ in range(40):
                prod.send(rgb)
            deadline = time.monotonic() + 10
            while st.stats["accepted"] < 10 and time.monotonic() < deadline:
                time.sleep(0.01)
            st.stop()
        accepted = st.stats["accepted"]
        assert 10 <= accepted
        results = collect(sub, accepted)
        assert all(r["ok"] for r in results)
        assert [r["seq"] for r in results] == list(range(accepted))
        assert_no_more(sub)


def test_async_clients(server):
    import asyncio

    async def go():
        sub = AsyncSubscriber(server.results, streams=["async0"])
        prod = AsyncProducer(server.frames, stream="async0")
        gen = ShapesGenerator(seed=3)
        # wait until the subscription is live: send until the first result comes back
        frame, label = gen.frame(96, 96)
        for _ in range(50):
            await prod.send(frame)
            try:
                await sub.recv(timeout=0.2)
                break
            except TimeoutError:
                continue
        while True:  # drain
            try:
                await sub.recv(timeout=0.3)
            except TimeoutError:
                break
        seq = await prod.send(frame, meta={"hello": "world"}, ts=123.5)
        r = await sub.recv(timeout=10)
        prod.close()
        sub.close()
        return r, seq, label

    r, seq, label = asyncio.run(go())
    assert r["seq"] == seq and r["ts"] == 123.5 and r["meta"] == {"hello": "world"}
    assert r["top"][0][1] == LABELS[label]


def test_producer_checks_before_sending(server):
    with Producer(server.frames, stream="chk") as prod:
        with pytest.raises(Exception, match="needs 300 bytes"):
            prod.send(b"\0" * 10, fmt="rgb", width=10, height=10)
        with pytest.raises(ValueError, match="stream must be"):
            Producer(server.frames, stream="_nope")


@pytest.mark.aarch64
def test_bad_model_fails_at_start():
    from streampi.errors import UnsupportedModelError, UnsupportedOpError

    with pytest.raises(UnsupportedOpError):
        ServerThread("custom_op")
    with pytest.raises(UnsupportedModelError):
        ServerThread("vector_fixed_batch")
    with pytest.raises(UnsupportedModelError, match="int16"):
        ServerThread("int16_input")


def test_bad_options():
    for kw in ({"policy": "random"}, {"max_batch": 0}, {"workers": 0}, {"max_delay_ms": -1}):
        with pytest.raises(ValueError):
            ServerThread("shapes_int8", ServerOptions(**kw))


def test_producer_copies_unless_told(server, sub):
    """A camera that captures into one reused array: the frame sent is the frame at send()."""
    gen = ShapesGenerator(seed=8)
    buf = np.empty((240, 320, 3), np.uint8)
    labels = []
    with Producer(server.frames, stream="reuse") as prod:
        for _ in range(30):
            frame, label = gen.frame(320, 240)
            buf[:] = frame
            prod.send(buf)
            buf[:] = 255  # the camera starts writing the next frame at once
            labels.append(label)
    results = sorted(collect(sub, 30), key=lambda r: r["seq"])
    assert [LABELS.index(r["top"][0][1]) for r in results] == labels


def test_stop_answers_frames_waiting_in_zeromq():
    """A v1 producer floods a queue stream; the stop answers every frame the server took off
    its sockets, those ZeroMQ had queued for it included."""
    # a generous stop deadline: every frame read is run (a slow backend needs seconds for them)
    opts = ServerOptions(workers=1, policy="queue", queue_size=2, max_batch=1, stop_timeout=120)
    rgb = np.random.default_rng(1).integers(0, 256, (480, 640, 3), np.uint8)
    st = ServerThread("mobilenet_v2_int8", opts).start()
    with Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames_v1)
        with Producer(st.frames_v1, stream="held", protocol_version="1", sndhwm=200) as prod:
            for _ in range(100):
                prod.send(rgb)
            st.stop()
        results = []
        try:
            while True:
                results.append(sub.recv(timeout=2))
        except TimeoutError:
            pass
    codes = collections.Counter("ok" if r["ok"] else r["error"]["code"] for r in results)
    assert set(codes) <= {"ok", "overloaded", "shutdown"} and codes["ok"] >= 1, codes
    seqs = [r["seq"] for r in results]
    assert len(seqs) == len(set(seqs))  # none twice
    ok_seqs = [r["seq"] for r in results if r["ok"]]
    assert ok_seqs == sorted(ok_seqs)  # a queue stream runs in order
    # every frame read was answered (less the subscription probes, answered on _errors)
    assert len(results) == st.stats["received"] - st.stats["errors.bad_frame"], dict(st.stats)
    assert st.stats["answered"] == st.stats["received"]
