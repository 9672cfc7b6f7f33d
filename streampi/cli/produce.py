"""``streampi produce``: send frames from a source to a server (a camera's side: no kernels, no interpreter).

Synthetic frames, a folder of images and a video file are sent at ``--fps`` (default 30) for
``--seconds`` (default 10) or ``--count`` frames, round robin over ``--streams``. A camera
(``rtsp://``, ``http://`` MJPEG, ``/dev/videoN``, ``picamera2``) is read on a thread of its own and
sent at ``--fps`` (default 5), always its newest frame, until stopped (SIGTERM, Ctrl-C), and
reopened with back-off whenever it drops: ``produce`` never exits on a camera fault.
``--config cameras.toml`` runs several cameras (see docs/cameras.md).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from ..errors import StreampiError
from ..formats import FORMATS
from ._argtypes import DefaultsHelpFormatter, add_curve_client, bounded, frame_size, positive_int

FORMATTER = DefaultsHelpFormatter
non_negative = bounded(float, minimum=0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", default=None,
                   help="the server's frame endpoint (default: tcp://127.0.0.1:5558 for v1.1, :5555 for v1)")
    p.add_argument("--protocol", choices=["1.1", "1"], default="1.1",
                   help="1.1: credit-based flow control (the server's --credit-bind); 1: PUSH (its --bind)")
    p.add_argument("--stream", default="cam0", help="stream name (with --streams N: a prefix)")
    p.add_argument("--streams", type=positive_int, default=1, help="synthetic frames and files: this many streams")
    p.add_argument("--source", default="synthetic",
                   help="'synthetic', a folder of images (JPEG sent as it is, PNG/BMP decoded), a video file, "
                        "rtsp://… or rtsps://… (H.264/H.265 camera), http(s)://… (MJPEG camera), /dev/videoN, "
                        "picamera2[:N]")
    p.add_argument("--config", metavar="CAMERAS.toml", default=None,
                   help="several cameras, one [[camera]] table each (contrib/cameras.toml); replaces --source")
    p.add_argument("--size", type=frame_size, default=(320, 240), help="synthetic (and device) frame size WxH")
    p.add_argument("--fmt", choices=FORMATS, default=None,
                   help="wire format of synthetic frames (default rgb) and of a device's (default: its own: jpeg "
                        "for V4L2, i420 for the Pi camera)")
    p.add_argument("--fps", type=non_negative, default=None,
                   help="frames per second per stream, 0: as fast as they come (default: 5 for a camera, "
                        "always its newest frame; 30 otherwise)")
    p.add_argument("--count", type=int, default=0, help="stop after this many frames per stream (0: no limit)")
    p.add_argument("--seconds", type=non_negative, default=None,
                   help="stop after this long, 0: no limit (default: 10 for synthetic frames and files; a camera "
                        "runs until stopped)")
    p.add_argument("--shared-memory", action="store_true",
                   help="a server on this machine: write raw frames into its shared-memory ring, only their "
                        "header goes over the socket (protocol v1.1; docs/protocol.md)")
    g = p.add_argument_group("cameras (docs/cameras.md)")
    g.add_argument("--decoder", choices=["pyav", "ffmpeg"], default="pyav",
                   help="RTSP and video: PyAV in this process, or an ffmpeg subprocess writing raw yuv420p to a "
                        "pipe (hardware decoding on a Pi 4: --ffmpeg-codec h264_v4l2m2m)")
    g.add_argument("--ffmpeg-codec", default=None, metavar="CODEC", help="--decoder ffmpeg: ffmpeg's decoder")
    g.add_argument("--threads", choices=["1", "auto"], default=None,
                   help="PyAV's decoding threads (default: 1 for a camera, the least delay; auto for a file)")
    g.add_argument("--transport", choices=["tcp", "udp"], default="tcp", help="RTSP transport")
    g.add_argument("--stats-every", type=non_negative, default=60.0,
                   help="print each camera's counts (decoded, sent, replaced, skipped_motion, reconnects) this "
                        "often, in seconds (0: only at the end)")
    g.add_argument("--motion", action="store_true",
                   help="send only frames with motion (plus one every --idle-every seconds and for --motion-hold "
                        "seconds after motion ends)")
    g.add_argument("--idle-every", type=non_negative, default=10.0, help="--motion: send a frame this often anyway")
    g.add_argument("--motion-hold", type=non_negative, default=2.0,
                   help="--motion: keep sending this long after motion ends")
    add_curve_client(p)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM (systemd's stop) and SIGINT (Ctrl-C)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    return stop


def run(args: argparse.Namespace) -> int:
    from ..sources import is_live

    if args.shared_memory and args.protocol != "1.1":
        raise StreampiError("--shared-memory needs --protocol 1.1 (the ring comes with the server's credit)")
    if args.config is not None or is_live(args.source) or args.motion:
        return _run_cameras(args)
    return _run_frames(args)


def _run_cameras(args: argparse.Namespace) -> int:
    import zmq

    from .. import logs
    from ._cameras import Camera, load_cameras, run_cameras

    logs.setup("info")  # each camera's state changes, one line each

    if args.config is not None:
        cameras, settings = load_cameras(args.config)
        stats_every = settings["stats_every"]
    else:
        if args.streams != 1:
            raise StreampiError("--streams: one camera is one stream; give several cameras with --config")
        cameras = [Camera(stream=args.stream, source=args.source, connect=args.connect, protocol=args.protocol,
                          fps=args.fps, decoder=args.decoder, threads=args.threads, transport=args.transport,
                          ffmpeg_codec=args.ffmpeg_codec, size=args.size, fmt=args.fmt, motion=args.motion,
                          idle_every=args.idle_every, motion_hold=args.motion_hold, curve_secret=args.curve_secret,
                          curve_server=args.curve_server, shared_memory=args.shared_memory)]
        stats_every = args.stats_every
    from ..sources import is_live

    live = all(is_live(c.source) for c in cameras)
    seconds = args.seconds if args.seconds is not None else (0.0 if live else 10.0)
    stop = _stop_on_signals()
    t0 = time.time()
    try:
        counts = run_cameras(cameras, count=args.count, seconds=seconds, stats_every=stats_every, stop=stop)
    finally:
        zmq.Context.instance().term()  # returns once every queued frame is sent (sockets linger 5 s)
    print(f"sent {sum(c.sent for c in counts)} frames on {len(counts)} stream(s) in {time.time() - t0:.1f} s",
          file=sys.stderr)
    return 0


def _run_frames(args: argparse.Namespace) -> int:
    """Synthetic frames, a folder or a video file: as fast as --fps says, round robin over --streams."""
    from ..client import Producer
    from ..sources import open_source

    fps = 30.0 if args.fps is None else args.fps
    seconds = 10.0 if args.seconds is None else args.seconds
    names = [args.stream] if args.streams == 1 else [f"{args.stream}{i}" for i in range(args.streams)]
    source = open_source(args.source, size=args.size, fmt=args.fmt, seed=None, loop=True,
                         decoder=args.decoder, threads=args.threads, ffmpeg_codec=args.ffmpeg_codec)  # said now
    frames = iter(source)
    prods = [Producer(args.connect, stream=n, curve_secret=args.curve_secret, curve_server=args.curve_server,
                      protocol_version=args.protocol, shared_memory=args.shared_memory) for n in names]
    t0, k, sent = time.time(), 0, 0
    try:
        while (not args.count or k < args.count) and (not seconds or time.time() - t0 < seconds):
            if fps > 0:
                delay = t0 + k / fps - time.time()
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
