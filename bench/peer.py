#!/usr/bin/env python3
"""streampi against zmq-vision 0.3.0, a ZeroMQ image-serving library, in one run.

    python bench/peer.py                           # MobileNetV2 int8, 640×480 JPEG, 2 workers
    python bench/peer.py --seconds 20 --clients 4

zmq-vision serves a model behind a ROUTER socket: JSON requests carrying a base64 image,
decoded with Pillow, a thread pool running the model, a JSON reply per request. It has no
TFLite backend; its documented extension point is a ``BaseInferenceServer`` subclass with
``load_model``/``preprocess``/``predict``, which this script writes for the same LiteRT
interpreter and model streampi serves (one interpreter per pool thread, Pillow's bilinear
resize, NumPy quantization, ``argpartition`` top-5): the way a user of that library would
serve a ``.tflite`` file, with its socket poll at 1 ms instead of its default 50 ms (replies
go out between polls: the default adds up to 50 ms to a lone request). Both servers get the same JPEG frames (640×480 synthetic scenes),
both with 2 workers, in this order:

  (a) zmq-vision at saturation: ``--clients`` client processes (its ``SyncClient``, one
      request in flight each, as its API allows), ok replies/s after a warm-up;
  (b) streampi at saturation: producer processes as fast as the server takes frames
      (``streampi.tools.loadtest.run_load``, policy ``queue``: every frame answered), ok results/s;
  (c) light load, one frame at a time on one connection: p50 request → reply (zmq-vision)
      and send → result (streampi);
  (d) the pipeline ceiling for these frames: ``--workers`` threads, each running streampi's
      kernel (the JPEG decoded each time) and invoke back to back, no sockets: the most any
      server could serve, so ceiling / zmq-vision bounds the ratio any server could reach;
  (e) ``--pairs``: saturation blocks of the two servers alternating (ABBA), both alive, so
      that each pair's ratio is taken seconds apart on a machine that drifts between minutes.

The target (issue 10): streampi ≥ 2× zmq-vision at saturation (the median of the pairs). Prints a table; writes
bench/results/peer.json (``--out``). zmq-vision comes with the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from streampi.client import Producer, Subscriber
from streampi.measure import pipeline_ceiling
from streampi.model import resolve_model
from streampi.runtime_info import usable_cores
from streampi.testing import start_server, wait_subscribed
from streampi.tools.loadtest import make_frames, run_load

ROOT = Path(__file__).resolve().parents[1]

TOP_K = 5


def peer_server(model_path: str, workers: int):
    """A zmq-vision server for a TFLite classifier, built on its documented extension point."""
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image
    from zmq_inference.core.config import ServerConfig
    from zmq_inference.core.protocol import Prediction
    from zmq_inference.server.base import BaseInferenceServer

    class LiteRTServer(BaseInferenceServer):
        def load_model(self) -> None:
            self._local = threading.local()
            probe = Interpreter(model_path=model_path, num_threads=1)
            inp, out = probe.get_input_details()[0], probe.get_output_details()[0]
            self._size = (int(inp["shape"][2]), int(inp["shape"][1]))
            self._in_q, self._out_q = inp["quantization"], out["quantization"]
            self._in_dtype = inp["dtype"]

        def _interp(self):
            interp = getattr(self._local, "interp", None)
            if interp is None:  # one interpreter per pool thread: an interpreter is not thread-safe
                interp = self._local.interp = Interpreter(model_path=model_path, num_threads=1)
                interp.allocate_tensors()
            return interp

        def preprocess(self, img: Image.Image) -> np.ndarray:
            x = np.asarray(img.convert("RGB").resize(self._size, Image.BILINEAR), dtype=np.float32)
            x = x / 127.5 - 1.0  # MobileNetV2's [-1, 1]
            scale, zero = self._in_q
            q = np.clip(np.round(x / scale) + zero, np.iinfo(self._in_dtype).min, np.iinfo(self._in_dtype).max)
            return q.astype(self._in_dtype)[None]

        def predict(self, tensor: np.ndarray) -> list[Prediction]:
            interp = self._interp()
            interp.set_tensor(interp.get_input_details()[0]["index"], tensor)
            interp.invoke()
            raw = interp.get_tensor(interp.get_output_details()[0]["index"])[0]
            scale, zero = self._out_q
            scores = (raw.astype(np.float32) - zero) * scale
            top = np.argpartition(-scores, TOP_K)[:TOP_K]
            top = top[np.argsort(-scores[top])]
            return [Prediction(str(int(j)), float(min(1.0, max(0.0, scores[j])))) for j in top]

    # poll_timeout_ms=1: its loop sends finished replies only between polls of the socket; at its
    # default (50 ms) a lone request waits up to 50 ms for its reply
    return LiteRTServer(ServerConfig(port=0, max_workers=workers, max_pending_requests=16, top_k=TOP_K,
                                     poll_timeout_ms=1, pretrained=False))


def peer_client(port: int, jpeg_path: str, seconds: float, warmup: float, out: multiprocessing.Queue) -> None:
    from zmq_inference.client.sync_client import SyncClient
    from zmq_inference.core.config import ClientConfig

    ok = errors = 0
    lat: list[float] = []
    with SyncClient(ClientConfig(port=port, timeout_ms=10_000)) as client:
        t_start = time.monotonic()
        t_measure, t_end = t_start + warmup, t_start + warmup + seconds
        while True:
            t0 = time.monotonic()
            if t0 >= t_end:
                break
            try:
                reply = client.infer(jpeg_path)
                good = not reply.error
            except Exception:
                good = False
            if t0 >= t_measure:
                ok, errors = ok + good, errors + (not good)
                lat.append((time.monotonic() - t0) * 1e3)
    out.put((ok, errors, lat))


def peer_saturation(port: int, jpeg: str, clients: int, seconds: float, warmup: float) -> dict:
    q: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=peer_client, args=(port, jpeg, seconds, warmup, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    got = [q.get(timeout=warmup + seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    ok, errors = sum(g[0] for g in got), sum(g[1] for g in got)
    lat = [v for g in got for v in g[2]]
    return {"ok_fps": ok / seconds, "ok": ok, "errors": errors, "p50_ms": statistics.median(lat) if lat else None}


def peer_light(port: int, jpeg: str, n: int, gap_s: float) -> float:
    from zmq_inference.client.sync_client import SyncClient
    from zmq_inference.core.config import ClientConfig

    lat = []
    with SyncClient(ClientConfig(port=port, timeout_ms=10_000)) as client:
        for i in range(n + 10):
            t0 = time.perf_counter()
            reply = client.infer(jpeg)
            if reply.error:
                raise RuntimeError(f"zmq-vision answered an error: {reply.error}")
            if i >= 10:
                lat.append((time.perf_counter() - t0) * 1e3)
            time.sleep(gap_s)
    return statistics.median(lat)


def streampi_light(info: dict, frame, fmt: str, n: int, gap_s: float) -> float:
    lat = []
    with Producer(info["credit_bind"], stream="light") as prod, Subscriber(info["publish"]) as sub:
        wait_subscribed(sub, info["bind"])
        for i in range(n + 10):
            t0 = time.perf_counter()
            seq = prod.send(frame, fmt=fmt, timeout=10)
            while True:
                r = sub.recv(timeout=10)
                if r.get("stream") == "light" and r.get("seq") == seq:
                    break
            if not r.get("ok"):
                raise RuntimeError(f"streampi answered {r.get('error')}")
            if i >= 10:
                lat.append((time.perf_counter() - t0) * 1e3)
            time.sleep(gap_s)
    return statistics.median(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4, help="zmq-vision client processes (and streampi producers)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--light-frames", type=int, default=100)
    ap.add_argument("--fmt", choices=["jpeg", "rgb"], default="jpeg",
                    help="jpeg: the same JPEG files to both; rgb: raw RGB to streampi and the same pixels as "
                         "an uncompressed PPM file to zmq-vision (its protocol carries image files only)")
    ap.add_argument("--pairs", type=int, default=4,
                    help="(e) saturation blocks of each server alternating, both alive (0: none)")
    ap.add_argument("--pair-seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "peer.json")
    args = ap.parse_args()
    try:
        import zmq_inference  # noqa: F401
    except ImportError:
        raise SystemExit("bench/peer.py needs zmq-vision: pip install 'streampi[bench]' (or zmq-vision==0.3.0)") from None
    path = resolve_model(args.model)
    frames = make_frames("synthetic", (640, 480), args.fmt, n=8)
    tmp = Path(tempfile.mkdtemp(prefix="streampi-peer-"))
    if args.fmt == "jpeg":
        for k, (data, _) in enumerate(frames):
            (tmp / f"frame{k}.jpg").write_bytes(data)
        jpeg_path, spec, size = str(tmp / "frame0.jpg"), (str(tmp), (640, 480), "jpeg"), len(frames[0][0])
    else:
        from PIL import Image

        Image.fromarray(frames[0][0]).save(tmp / "frame0.ppm")
        jpeg_path, spec, size = str(tmp / "frame0.ppm"), ("synthetic", (640, 480), "rgb"), frames[0][0].nbytes
    print(f"machine: {platform.machine()}, {len(usable_cores())} usable cores, Python {platform.python_version()}; "
          f"model {path.name}, {args.workers} workers, 640×480 {args.fmt} ({size // 1024} KiB)", flush=True)

    server = peer_server(str(path), args.workers)
    server.start()
    server.wait_until_ready(120)
    pairs = []
    try:
        print(f"(a) zmq-vision at saturation: {args.clients} clients …", flush=True)
        peer = peer_saturation(server.bound_port, jpeg_path, args.clients, args.seconds, args.warmup)
        print(f"    {peer['ok_fps']:.1f} replies/s ({peer['errors']} errors)", flush=True)
        print("(c) zmq-vision, light load …", flush=True)
        peer_p50 = peer_light(server.bound_port, jpeg_path, args.light_frames, 0.01)
        print(f"    p50 {peer_p50:.2f} ms", flush=True)

        proc, info = start_server([str(path), "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                                   "--workers", str(args.workers), "--policy", "queue", "--log-level", "warning"])
        try:
            def own_saturation(seconds: float, warmup: float, tag: str) -> dict:
                return run_load(info["credit_bind"], info["publish"], rate=0, seconds=seconds, warmup=warmup,
                                producers=args.clients, streams=args.clients, arrival="fixed",
                                frames_spec=spec, server_pid=proc.pid, stream_prefix=tag).as_dict()

            print(f"(b) streampi at saturation: {args.clients} producers …", flush=True)
            sat = own_saturation(args.seconds, args.warmup, "sat")
            print(f"    {sat['achieved_fps']:.1f} results/s ({sat['unanswered']} unanswered, errors {sat['errors']})",
                  flush=True)
            print("(c) streampi, light load …", flush=True)
            own_p50 = streampi_light(info, frames[0][0], frames[0][1], args.light_frames, 0.01)
            print(f"    p50 {own_p50:.2f} ms", flush=True)
            for i in range(args.pairs):  # both servers alive, the idle one waiting on its socket
                pair = {}
                for who in (("peer", "streampi") if i % 2 == 0 else ("streampi", "peer")):
                    if who == "peer":
                        pair[who] = peer_saturation(server.bound_port, jpeg_path, args.clients, args.pair_seconds,
                                                    1.5)["ok_fps"]
                    else:
                        pair[who] = own_saturation(args.pair_seconds, 1.5, f"pair{i}")["achieved_fps"]
                pairs.append(pair)
                print(f"(e) pair {i + 1}: zmq-vision {pair['peer']:.1f}, streampi {pair['streampi']:.1f} frames/s "
                      f"({pair['streampi'] / pair['peer']:.2f}×)", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        server.stop()
        server.join(30)

    print("(d) the pipeline ceiling for these frames …", flush=True)
    pc = pipeline_ceiling(path, args.workers, args.seconds, (640, 480),
                          jpeg=frames[0][0] if args.fmt == "jpeg" else None)
    print(f"    {pc['fps']:.1f} frames/s; kernel p50 {pc['kernel_p50_ms']:.2f} ms, invoke p50 "
          f"{pc['invoke_p50_ms']:.2f} ms", flush=True)
    ratio = sat["achieved_fps"] / peer["ok_fps"] if peer["ok_fps"] else float("inf")
    print("\n| figure | zmq-vision 0.3.0 | streampi | streampi / zmq-vision |\n|---|---:|---:|---:|")
    print(f"| ok frames/s at saturation | {peer['ok_fps']:.1f} | {sat['achieved_fps']:.1f} | **{ratio:.2f}** "
          f"(target ≥ 2) |")
    print(f"| light-load p50, ms | {peer_p50:.2f} | {own_p50:.2f} | {own_p50 / peer_p50:.2f} |")
    pair_ratio = statistics.median(p["streampi"] / p["peer"] for p in pairs) if pairs else None
    if pairs:
        r = sorted(p["streampi"] / p["peer"] for p in pairs)
        print(f"| ok frames/s at saturation, {len(pairs)} interleaved pairs (median; range of ratios) | "
              f"{statistics.median(p['peer'] for p in pairs):.1f} | {statistics.median(p['streampi'] for p in pairs):.1f} | "
              f"**{pair_ratio:.2f}** ({r[0]:.2f}–{r[-1]:.2f}; target ≥ 2) |")
    print(f"| / the pipeline ceiling ({pc['fps']:.1f} frames/s) | {peer['ok_fps'] / pc['fps']:.3f} | "
          f"{sat['achieved_fps'] / pc['fps']:.3f} | the most any server could reach: "
          f"{pc['fps'] / peer['ok_fps']:.2f}× |")
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(), "model": path.name,
              "fmt": args.fmt,
              "workers": args.workers, "clients": args.clients, "zmq_vision": {**peer, "light_p50_ms": peer_p50},
              "streampi": {"ok_fps": sat["achieved_fps"], "unanswered": sat["unanswered"], "errors": sat["errors"],
                           "light_p50_ms": own_p50}, "ratio": ratio, "pipeline_ceiling": pc,
              "pairs": pairs, "pair_ratio": pair_ratio,
              "ratio_bound": pc["fps"] / peer["ok_fps"] if peer["ok_fps"] else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
