"""What a frame that the server does not run costs it: taking it in and answering it.

Measured inside a running server (its own event loop thread), on real received ZeroMQ
frames, per frame, for 640x480 RGB and for JPEG frames:

* ``receive + replace``: a frame of a ``latest`` stream whose waiting frame it replaces:
  header validation, admission, and the ``dropped`` answer of the frame it replaced
  (encoded and published);
* ``answer only``: ``_settle`` of a frame with an error (``dropped``): building, encoding and
  publishing the answer;
* ``receive + overloaded``: a v1 frame of a full ``queue`` stream, answered at once.

For scale, the same run times the kernel (resize + quantize into the model's input) and one
invoke of the bundled MobileNetV2: what a frame that *is* run costs.

    python bench/drops.py
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import simplejpeg
import zmq

from streampi import protocol
from streampi.model import Model, bundled_model
from streampi.serving import ServerOptions
from streampi.serving.scheduler import Job
from streampi.testing import ServerThread


def received_parts(endpoint: str, parts: list, n: int) -> list[list]:
    """``n`` copies of ``parts`` as ZeroMQ really delivers them (zmq.Frame objects)."""
    ctx = zmq.Context.instance()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    pull.setsockopt(zmq.RCVHWM, 0)
    push.setsockopt(zmq.SNDHWM, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    out = []
    for _ in range(n):
        push.send_multipart(parts)
        out.append(pull.recv_multipart(copy=False))
    push.close()
    pull.close()
    return out


def in_loop(st: ServerThread, fn) -> float:
    """Run ``fn`` in the server's event loop thread; its result."""
    done = threading.Event()
    box = {}

    def call():
        box["v"] = fn()
        done.set()

    st._loop.call_soon_threadsafe(call)
    done.wait(120)
    return box["v"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    jpeg = simplejpeg.encode_jpeg(rgb, quality=85)
    opts = ServerOptions(workers=1, policy="latest", stream_policies={"q": "queue"}, queue_size=1)
    with ServerThread("shapes_int8", opts) as st:
        srv = st.server
        srv._wake.set = lambda: None  # nothing is dispatched: every frame stays waiting or is answered
        rows = []
        for name, payload, fmt, w, h in (("640x480 RGB", rgb, "rgb", 640, 480),
                                         (f"JPEG {len(jpeg) // 1024} KiB", jpeg, "jpeg", None, None)):
            head = protocol.encode_frame("s", 0, fmt, payload, w, h, ts=time.time())
            frames = received_parts("", head, args.frames)
            qframes = received_parts("", protocol.encode_frame("q", 0, fmt, payload, w, h, ts=time.time()),
                                     args.frames)
            res = {"replace": [], "answer": [], "overloaded": []}
            for _ in range(args.rounds):
                def replace(frames=frames):
                    t0 = time.perf_counter()
                    for parts in frames:
                        srv._receive(parts)
                    return (time.perf_counter() - t0) / len(frames)

                def answer(frames=frames):
                    jobs = [Job("s", i, protocol.decode_frame(p), p, time.perf_counter()) for i, p in enumerate(frames)]
                    t0 = time.perf_counter()
                    for job in jobs:
                        srv._settle(job, error=("dropped", "replaced by a newer frame of stream s (seq 1)"))
                    return (time.perf_counter() - t0) / len(jobs)

                def overloaded(qframes=qframes):
                    srv._receive(qframes[0])  # fills the queue stream (size 1)
                    t0 = time.perf_counter()
                    for parts in qframes[1:]:
                        srv._receive(parts)
                    return (time.perf_counter() - t0) / (len(qframes) - 1)

                res["replace"].append(in_loop(st, replace))
                res["answer"].append(in_loop(st, answer))
                res["overloaded"].append(in_loop(st, overloaded))
                in_loop(st, lambda: [srv._settle(j, error=("shutdown", "bench")) for j in srv.sched.take_all()])
            rows.append((name, {k: statistics.median(v) * 1e6 for k, v in res.items()}))
        stats = dict(srv.stats)
    model = Model(bundled_model("mobilenet_v2_int8"))
    x = np.zeros(model.input.shape, model.input.dtype)
    model.run(x)
    t = []
    for _ in range(30):
        t0 = time.perf_counter()
        model.run(x)
        t.append(time.perf_counter() - t0)
    from streampi.config import load_config
    from streampi.preprocess import Preprocessor

    pre = Preprocessor.for_model(model, load_config(model.path))
    k = []
    for _ in range(50):
        t0 = time.perf_counter()
        pre(rgb, "rgb")
        k.append(time.perf_counter() - t0)
    print(f"per frame, median of {args.rounds} rounds of {args.frames} frames, in the server's loop thread:")
    print(f"{'frames':<16} {'receive+replace':>16} {'answer only':>12} {'receive+overloaded':>19}")
    for name, r in rows:
        print(f"{name:<16} {r['replace']:14.1f}µs {r['answer']:10.1f}µs {r['overloaded']:17.1f}µs")
    print(f"for scale: kernel 640x480 -> 224x224 {statistics.median(k) * 1e6:.0f} µs, "
          f"MobileNetV2 int8 invoke {statistics.median(t) * 1e3:.2f} ms (1 thread)")
    print(f"answers published: {stats.get('answered', 0)}")


if __name__ == "__main__":
    main()
