"""A saturated ``queue`` stream beside a live ``latest`` stream: does the live one wait?

One server (bundled MobileNetV2 int8 by default, 640x480 RGB), policy ``latest`` except the
stream ``bulk0`` (``queue``). The live stream ``live0`` sends at ``--live-fps``; its latency
p50 is measured alone, then while ``bulk0``'s producer sends as fast as it can, over v1.1
(it waits for credit) and over v1 (PUSH: its frames that find the queue full are answered
``overloaded``). Target: the live stream's p50 stays within 2x its unloaded value.

    python bench/mixed.py --seconds 10
"""

from __future__ import annotations

import argparse
import signal
import threading

from streampi.testing import start_server
from streampi.tools.loadtest import run_load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--live-fps", type=float, default=10.0)
    ap.add_argument("--size", default="640x480")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    spec = ("synthetic", (w, h), "rgb")
    proc, info = start_server([args.model, "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--policy", "latest", "--policy", "bulk0=queue"])
    eps = {"1.1": info["credit_bind"], "1": info["bind"]}
    kw = dict(producers=1, streams=1, arrival="fixed", frames_spec=spec, warmup=1.0)
    rows = []
    try:
        def live(tag: str):
            return run_load(eps["1.1"], info["publish"], rate=args.live_fps, seconds=args.seconds,
                            stream_prefix="live", **kw).as_dict()

        run_load(eps["1.1"], info["publish"], rate=args.live_fps, seconds=2, stream_prefix="warm", **kw)
        rows.append(("alone", live("alone"), None))
        for proto in ("1.1", "1"):
            bulk: dict = {}

            def flood(proto=proto, bulk=bulk):
                bulk.update(run_load(eps[proto], info["publish"], rate=0, seconds=args.seconds + 2,
                                     stream_prefix="bulk", protocol=proto, **kw).as_dict())

            t = threading.Thread(target=flood)
            t.start()
            d = live(proto)
            t.join()
            rows.append((f"beside a v{proto} queue flood", d, bulk))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    base = rows[0][1]["latency_ms"]["p50"]
    print(f"live stream {args.live_fps:g} fps, {args.size} RGB, model {args.model}:")
    print(f"{'case':<30} {'live p50':>9} {'x alone':>8} {'live p99':>9} {'live ok':>8} {'live unanswered':>16} "
          f"{'bulk ok/s':>10} {'bulk errors':>12}")
    for name, d, b in rows:
        lat = d["latency_ms"]
        berr = sum(b["errors"].values()) if b else 0
        print(f"{name:<30} {lat['p50']:8.2f}m {lat['p50'] / base:8.2f} {lat['p99']:8.2f}m {d['ok']:8d} "
              f"{d['unanswered']:16d} {(b['achieved_fps'] if b else 0):10.1f} {berr:12d}")
    print("target: the live stream's p50 within 2x its value alone")


if __name__ == "__main__":
    main()
