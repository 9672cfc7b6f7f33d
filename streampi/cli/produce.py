"""``streampi produce``: send frames from a source to a server (a camera's side: no kernels, no interpreter)."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import StreampiError
from ..formats import FORMATS
from ._argtypes import DefaultsHelpFormatter, add_curve_client, frame_size, positive_int

FORMATTER = DefaultsHelpFormatter


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", default=None,
                   help="the server's frame endpoint (default: tcp://127.0.0.1:5558 for v1.1, :5555 for v1)")
    p.add_argument("--protocol", choices=["1.1", "1"], default="1.1",
                   help="1.1: credit-based flow control (the server's --credit-bind); 1: PUSH (its --bind)")
    p.add_argument("--stream", default="cam0", help="stream name (with --streams N: a prefix)")
    p.add_argument("--streams", type=positive_int, default=1)
    p.add_argument("--source", default="synthetic",
                   help="'synthetic', a folder of images (JPEG sent as it is, PNG/BMP decoded), or a video file")
    p.add_argument("--size", type=frame_size, default=(320, 240), help="synthetic frame size WxH")
    p.add_argument("--fmt", choices=FORMATS, default="rgb", help="wire format of synthetic frames")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second per stream (0: as fast as possible)")
    p.add_argument("--count", type=int, default=0, help="stop after this many frames per stream (0: no limit)")
    p.add_argument("--seconds", type=float, default=10.0, help="stop after this long (0: no limit)")
    p.add_argument("--shared-memory", action="store_true",
                   help="a server on this machine: write raw frames into its shared-memory ring, only their "
                        "header goes over the socket (protocol v1.1; docs/protocol.md)")
    add_curve_client(p)


def run(args: argparse.Namespace) -> int:
    from ..client import Producer
    from ..sources import open_source

    names = [args.stream] if args.streams == 1 else [f"{args.stream}{i}" for i in range(args.streams)]
    if args.shared_memory and args.protocol != "1.1":
        raise StreampiError("--shared-memory needs --protocol 1.1 (the ring comes with the server's credit)")
    source = open_source(args.source, size=args.size, fmt=args.fmt, seed=None, loop=True)  # a bad source: said now
    frames = iter(source)
    prods = [Producer(args.connect, stream=n, curve_secret=args.curve_secret, curve_server=args.curve_server,
                      protocol_version=args.protocol, shared_memory=args.shared_memory) for n in names]
    t0, k, sent = time.time(), 0, 0
    try:
        while (not args.count or k < args.count) and (not args.seconds or time.time() - t0 < args.seconds):
            if args.fps > 0:
                delay = t0 + k / args.fps - time.time()
                if delay > 0:
                    time.sleep(delay)
            for p in prods:
                frame = next(frames)
                p.send(frame.data, fmt=frame.fmt, meta={"label": frame.label} if frame.label is not None else None)
                sent += 1
            k += 1
    except KeyboardInterrupt:
        pass
    finally:
        source.close()
        for p in prods:
            p.close()
        import zmq
        zmq.Context.instance().term()  # returns once every queued frame is sent (sockets linger 5 s)
    dropped = sum(p.dropped for p in prods)
    if args.shared_memory:
        print(f"shared memory: {prods[0].stats()['shared_memory']}; {sum(p.shm_frames for p in prods)} frames "
              f"through the ring", file=sys.stderr)
    print(f"sent {sent - dropped} frames on {len(prods)} stream(s) in {time.time() - t0:.1f} s"
          + (f"; {dropped} more were replaced by newer ones before they had credit (policy latest)" if dropped else ""),
          file=sys.stderr)
    return 0
