"""A real RTSP server for the camera tests: GStreamer's RTSP server (gst-rtsp-server) serving an
H.264 MP4 file, or a live test pattern, at rtsp://127.0.0.1:PORT/cam.

Run it with the system Python, which has PyGObject and GstRtspServer (the venv has not):

    /usr/bin/python3 tests/rtsp_server.py --file clip.mp4 [--port 0]
    /usr/bin/python3 tests/rtsp_server.py --pattern 320x240@10 [--port 8554]

It prints ``READY rtsp://127.0.0.1:PORT/cam`` once it listens (port 0: a free one), serves each
client its own pipeline from the first frame (not shared: every client gets frame 0 first), and
exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(args: argparse.Namespace) -> str:
    if args.file:
        # the file's own H.264, payloaded as it is: its timestamps are the frames' pts
        return (f"( filesrc location=\"{args.file}\" ! qtdemux ! h264parse ! "
                f"rtph264pay name=pay0 pt=96 config-interval=-1 )")
    size, _, fps = args.pattern.partition("@")
    width, height = size.split("x")
    return (f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
            f"framerate={fps or 10}/1,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
            f"key-int-max={fps or 10} ! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 "
            f"config-interval=-1 )")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", help="an MP4 file holding H.264")
    what.add_argument("--pattern", help="a live test pattern WxH@FPS, encoded by x264enc")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--path", default="/cam")
    args = p.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
