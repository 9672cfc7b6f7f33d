"""The baseline a user would try first: one process, REQ/REP, OpenCV's resize, NumPy's quantize.

``streampi bench --baseline`` runs it at the same offered load as the server, in the same run.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...model import Model
from .histogram import LatencyHistogram
from .loadgen import make_frames, schedule


def _baseline_server(endpoint_q: mp.Queue, model_path: str, size: tuple[int, int]) -> None:
    """One process, REQ/REP: receive a frame, cv2.resize, quantize with NumPy, invoke, reply."""
    import cv2
    import msgspec
    import zmq

    from ...config import load_config

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    m = Model(model_path)
    cfg = load_config(model_path)
    h, w, c = m.image_input()
    spec = m.input
    mean, std = np.asarray(cfg.mean, np.float32), np.asarray(cfg.std, np.float32)
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    endpoint_q.put(f"tcp://127.0.0.1:{port}")
    while True:
        parts = rep.recv_multipart()
        if parts[0] == b"stop":
            rep.send(b"bye")
            break
        head = msgspec.msgpack.decode(parts[0])
        if head["fmt"] == "jpeg":
            img = cv2.imdecode(np.frombuffer(parts[1], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        elif head["fmt"] == "i420":
            img = cv2.cvtColor(np.frombuffer(parts[1], np.uint8).reshape(head["h"] * 3 // 2, head["w"]),
                               cv2.COLOR_YUV2RGB_I420)
        else:
            img = np.frombuffer(parts[1], np.uint8).reshape(head["h"], head["w"], -1)[..., :3]
        img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA)
        x = (img.astype(np.float32) / 255.0 - mean) / std
        if spec.quantized:
            info = np.iinfo(spec.dtype)
            x = np.clip(np.rint(x / spec.scale) + spec.zero_point, info.min, info.max)
        m.set_input(x.astype(spec.dtype)[None])
        m.invoke()
        scores = m.outputs_float()[0][0]
        rep.send(msgspec.msgpack.encode({"seq": head["seq"], "top": int(np.argmax(scores))}))
    rep.close()
    ctx.term()


def _baseline_client(endpoint: str, rate: float, seconds: float, max_frames: int, arrival: str, seed: int,
                     frames_spec: tuple, start_at: float, out: mp.Queue) -> None:
    import msgspec
    import zmq

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    frames = make_frames(*frames_spec, seed=seed)
    offsets = schedule(rate, seconds, max_frames, arrival, seed)
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.connect(endpoint)
    lat = []
    while time.time() < start_at:
        time.sleep(0.01)
    for i, off in enumerate(offsets):
        due = start_at + off
        now = time.time()
        if due > now:
            time.sleep(due - now)
        payload, fmt = frames[i % len(frames)]
        arr = np.asarray(payload) if not isinstance(payload, bytes) else None
        head = {"seq": i, "fmt": fmt}
        if arr is not None:
            head.update(h=arr.shape[0] * 2 // 3 if fmt == "i420" else arr.shape[0], w=arr.shape[1])
        req.send_multipart([msgspec.msgpack.encode(head), payload if arr is None else arr.tobytes()])
        req.recv()
        lat.append((time.time() - due) * 1e3)
    req.close()
    ctx.term()
    out.put(lat)


def run_baseline(model_path: Path, *, rate: float, seconds: float, producers: int, arrival: str,
                 frames_spec: tuple, max_frames: int = 0) -> dict[str, Any]:
    """The imagezmq tutorial pattern under the same open-loop schedule (one REQ per producer)."""
    ctx = mp.get_context("spawn")
    eq, q = ctx.Queue(), ctx.Queue()
    server = ctx.Process(target=_baseline_server, args=(eq, str(model_path), frames_spec[1]), daemon=True)
    server.start()
    endpoint = eq.get(timeout=120)
    start_at = time.time() + 1.5
    per = (max_frames // producers) if max_frames else 0
    clients = [ctx.Process(target=_baseline_client, args=(endpoint, rate / producers, seconds, per, arrival,
                                                          2000 + i, frames_spec, start_at, q), daemon=True)
               for i in range(producers)]
    for c in clients:
        c.start()
    hist, n = LatencyHistogram(), 0
    for _ in clients:
        for v in q.get(timeout=seconds * 20 + 120):
            hist.add(v)
            n += 1
    elapsed = time.time() - start_at
    for c in clients:
        c.join(5)
    import zmq
    zctx = zmq.Context.instance()
    s = zctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send_multipart([b"stop"])
    s.poll(2000)
    s.close()
    server.join(5)
    if server.is_alive():
        server.terminate()
    # answered frames over the time the schedule took (a late baseline takes longer than `seconds`)
    return {"offered_fps": rate, "achieved_fps": n / max(seconds, elapsed), "answered": n,
            "latency_ms": hist.summary()}
