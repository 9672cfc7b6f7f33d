"""Real cameras in, against real servers and real streams: H.264 made by ffmpeg (libx264) from the
generator's scenes, served by GStreamer's RTSP server (tests/rtsp_server.py, run by the system
Python), decoded by PyAV and by an ffmpeg pipe; HTTP MJPEG from a real HTTP server on loopback;
``streampi produce`` sending to a real ``streampi serve`` with the bundled shapes detector, and a
subscriber scoring what comes back. Nothing is mocked: servers are killed with SIGKILL by pid and
restarted, streams are cut in the middle of a JPEG."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from helpers import systemd_verify

from streampi.client import Producer, Subscriber
from streampi.errors import SourceError, StreampiError
from streampi.evaluation import mean_average_precision
from streampi.sources import open_source, rgb_to_i420
from streampi.synthetic import ScenesGenerator, ShapesGenerator
from streampi.testing import start_server, wait_subscribed

av = pytest.importorskip("av", reason="RTSP and H.264 files are read by PyAV: pip install 'streampi[cameras]'")

FFMPEG = shutil.which("ffmpeg")
SYSTEM_PYTHON = "/usr/bin/python3"
LAUNCHER = Path(__file__).with_name("rtsp_server.py")
CLI = [sys.executable, "-m", "streampi"]
FPS = 10


def _gst_rtsp() -> str | None:
    """Why GStreamer's RTSP server cannot run here, or None."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"no {SYSTEM_PYTHON}"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None); "
                            "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('qtdemux')"],
                           capture_output=True, text=True, timeout=60)
    return None if probe.returncode == 0 else ("the system Python lacks GStreamer's RTSP server, x264enc or qtdemux "
                                               "(apt install python3-gi gir1.2-gst-rtsp-server-1.0 "
                                               "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly): "
                                               + probe.stderr.strip()[-200:])


needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg program is not installed (apt install ffmpeg)")
_WHY_NO_RTSP = _gst_rtsp()
needs_rtsp = pytest.mark.skipif(_WHY_NO_RTSP is not None, reason=_WHY_NO_RTSP or "")


# -- H.264 files made by ffmpeg from the generator's scenes ---------------------------------------------------
def write_h264(path: Path, rgbs: list[np.ndarray], fps: int = FPS, gop: int = 5) -> Path:
    """libx264, yuv420p, a key frame every ``gop`` frames, the raw frames written to ffmpeg's stdin."""
    h, w = rgbs[0].shape[:2]
    cmd = [FFMPEG, "-y", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", str(fps), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(gop), "-bf", "0",
           "-crf", "20", "-preset", "veryfast", "-movflags", "+faststart", str(path)]
    out = subprocess.run(cmd, input=b"".join(np.ascontiguousarray(r).tobytes() for r in rgbs), capture_output=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    return path


@pytest.fixture(scope="module")
def scenes_clip(tmp_path_factory):
    """48 scenes of 320×240 with their boxes and classes (ground truth per frame index), as H.264."""
    if FFMPEG is None:
        pytest.skip("the ffmpeg program is not installed (apt install ffmpeg)")
    gen = ScenesGenerator(seed=23)
    scenes = [gen.scene(320, 240) for _ in range(48)]
    path = write_h264(tmp_path_factory.mktemp("h264") / "scenes.mp4", [s[0] for s in scenes])
    return path, scenes


def index_of(frame) -> int:
    return int(frame.origin.rsplit(" ", 1)[1])


# -- GStreamer's RTSP server, in its own process ---------------------------------------------------------------
class RtspServer:
    """tests/rtsp_server.py run by the system Python; ``url`` once it printed its ready line."""

    def __init__(self, *args: str, port: int = 0) -> None:
        self.args, self.port = args, port
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(LAUNCHER), *args, "--port", str(port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and not line.startswith("READY"):
            if sel.select(deadline - time.monotonic()):
                line = self.proc.stdout.readline()
                if not line:
                    break
        sel.close()
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"the RTSP server did not start: {self.proc.communicate(timeout=10)[1][-500:]}")
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextlib.contextmanager
def rtsp_server(*args: str):
    server = RtspServer(*args)
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def take(source, n: int, limit_s: float = 30.0) -> list:
    frames, deadline = [], time.monotonic() + limit_s
    while len(frames) < n and time.monotonic() < deadline:
        frame = source.take(1.0)
        if frame is not None:
            frames.append(frame)
    return frames


# -- video files ---------------------------------------------------------------------------------------------
def test_an_h264_file_frame_by_frame_as_i420(scenes_clip):
    path, scenes = scenes_clip
    with open_source(path) as source:
        frames = list(source)
    assert [index_of(f) for f in frames] == list(range(48))
    assert all(f.fmt == "i420" and f.data.shape == (360, 320) and (f.width, f.height) == (320, 240) for f in frames)
    assert [f.pts for f in frames] == pytest.approx([i / FPS for i in range(48)])
    # each decoded frame is its own scene, compressed: the nearest of all 48, and close to it
    for f in frames[::6]:
        errors = [np.abs(f.data.astype(int) - rgb_to_i420(s[0])).mean() for s in scenes]
        assert int(np.argmin(errors)) == index_of(f) and errors[index_of(f)] < 4.0
    picked = [index_of(f) for f in open_source(path).sample(5)]
    assert picked == [0, 12, 24, 35, 47]


@needs_ffmpeg
def test_the_ffmpeg_pipe_decodes_the_same_frames_as_pyav(scenes_clip):
    path, _ = scenes_clip
    with open_source(path) as pyav, open_source(path, decoder="ffmpeg") as pipe:
        a, b = list(pyav), list(pipe)
    assert len(a) == len(b) == 48
    assert all(x.fmt == y.fmt == "i420" and np.array_equal(x.data, y.data) for x, y in zip(a, b))


# -- RTSP ------------------------------------------------------------------------------------------------------
@needs_rtsp
@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_rtsp_frames_are_the_served_ones_newest_first(scenes_clip, decoder):
    if decoder == "ffmpeg" and FFMPEG is None:
        pytest.skip("the ffmpeg program is not installed")
    path, scenes = scenes_clip
    raw = [rgb_to_i420(s[0]).astype(int) for s in scenes]
    with rtsp_server("--file", str(path)) as server:
        before = time.time()
        with open_source(server.url, decoder=decoder) as source:
            assert source.live
            frames = take(source, 20)
            stats = source.stats()
    assert len(frames) == 20
    picked = [int(np.argmin([np.abs(f.data.astype(int) - r).mean() for r in raw])) for f in frames]
    assert picked == sorted(picked) and len(set(picked)) == 20  # in order, never one twice, never an old one
    for f, k in zip(frames, picked):
        assert f.fmt == "i420" and (f.width, f.height) == (320, 240) and before <= f.captured <= f.decoded
        if decoder == "pyav" and f.pts is not None:
            assert round(f.pts * FPS) == k  # pts names the frame of the file
    assert stats["decoded"] == stats["taken"] + stats["replaced"] + stats["pending"]


@needs_rtsp
def test_a_camera_that_never_opens_is_named_with_ffmpegs_reason(scenes_clip):
    path, _ = scenes_clip
    port = free_port()
    for decoder in ("pyav", "ffmpeg"):
        with pytest.raises(SourceError, match=rf"rtsp://127\.0\.0\.1:{port}/cam cannot be opened: .*Connection refused"):
            open_source(f"rtsp://127.0.0.1:{port}/cam", decoder=decoder)
    with rtsp_server("--file", str(path)) as server:
        wrong = server.url.replace("/cam", "/nope")
        with pytest.raises(SourceError, match=rf"{re.escape(wrong)} cannot be opened: .*404 Not Found") as err:
            open_source(wrong, wait=True)  # waiting cannot mend a stream that does not exist
        assert not err.value.transient
    with pytest.raises(SourceError, match=r"rtsp://user:\*\*\*@127\.0\.0\.1:\d+/cam cannot be opened"):
        open_source(f"rtsp://user:secret@127.0.0.1:{port}/cam")  # the password is never said


def test_unknown_urls_and_device_specs():
    with pytest.raises(SourceError, match="unknown kind of URL.*rtsp://"):
        open_source("rtmp://127.0.0.1/live")
    with pytest.raises(SourceError, match="unknown decoder 'gstreamer'"):
        open_source("synthetic", decoder="gstreamer")
    with pytest.raises(SourceError, match="the source is empty"):
        open_source("")
    if importlib.util.find_spec("streampi.sources.devices") is None:
        for spec in ("/dev/video0", "picamera2", "picamera2:1"):
            with pytest.raises(SourceError, match=f"{spec}: the device source .* is not available"):
                open_source(spec)
    else:  # the device adapters are there: a device that is not is said at once
        with pytest.raises(SourceError, match="/dev/video99"):
            open_source("/dev/video99")


def test_a_source_read_frame_by_frame_runs_on_its_own_thread_and_is_reopened(scenes_clip):
    """What a V4L2 or Pi camera gets (streampi.sources.live.Threaded), here over a real H.264
    file: the newest frame, each pass's end a fault that reopens it, the counts exact."""
    from streampi.sources.live import Threaded

    path, _ = scenes_clip
    with Threaded(open_source(path)) as source:
        assert source.live and source.name == str(path)
        frames = take(source, 60, limit_s=60)
        source.close()
        stats = source.stats()
    assert len(frames) == 60 and stats["reconnects"] >= 1  # 48 frames a pass: a second pass was opened
    indices = [index_of(f) for f in frames]
    restarts = sum(b < a for a, b in zip(indices, indices[1:]))  # a new pass starts from frame 0 again
    assert all(b != a for a, b in zip(indices, indices[1:]))  # never the same frame twice
    assert 1 <= restarts <= stats["reconnects"]
    assert stats["state"] == "closed" and stats["pending"] == 0
    assert stats["decoded"] == stats["taken"] + stats["replaced"] and stats["taken"] == 60


# -- produce → serve → subscribe -------------------------------------------------------------------------------
@pytest.fixture
def detector_server():
    proc, info = start_server(["shapes_detector", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--policy", "queue", "--workers", "1"])
    try:
        yield info
    finally:
        proc.terminate()
        assert proc.wait(60) == 0


def collect(sub: Subscriber, stream: str, until, limit_s: float = 60.0) -> list[dict]:
    """Results of ``stream`` until ``until(results)`` or ``limit_s``."""
    results, deadline = [], time.monotonic() + limit_s
    while not until(results) and time.monotonic() < deadline:
        try:
            r = sub.recv(timeout=0.5)
        except TimeoutError:
            continue
        if r.get("stream") == stream:
            results.append(r)
    return results


def score(by_index: dict[int, list], scenes) -> float:
    keys = sorted(by_index)
    return mean_average_precision([by_index[k] for k in keys], [(scenes[k][1], scenes[k][2]) for k in keys])[0]


@needs_rtsp
def test_rtsp_through_produce_and_serve_scores_as_the_raw_frames(scenes_clip, detector_server):
    """Accuracy on decoded H.264 within 0.03 of the raw frames' mAP, frame for frame."""
    path, scenes = scenes_clip
    info = detector_server
    with Subscriber(info["publish"]) as sub:
        wait_subscribed(sub, info["bind"])
        with Producer(info["credit_bind"], stream="raw", when_full="wait") as prod:
            seqs = {prod.send(img, fmt="rgb"): k for k, (img, _, _) in enumerate(scenes)}
        raw = collect(sub, "raw", lambda rs: len(rs) == len(seqs))
        assert len(raw) == len(seqs) and all(r["ok"] for r in raw)
        with rtsp_server("--file", str(path)) as server:
            produce = subprocess.run([*CLI, "produce", "--connect", info["credit_bind"], "--source", server.url,
                                      "--stream", "rtsp", "--fps", "0", "--seconds", "4.5", "--stats-every", "0"],
                                     capture_output=True, text=True, timeout=120)
        assert produce.returncode == 0, produce.stderr
        sent = int(re.search(r"camera rtsp: decoded \d+ sent (\d+)", produce.stderr)[1])
        via_rtsp = collect(sub, "rtsp", lambda rs: len(rs) == sent)
    assert len(via_rtsp) == sent >= 30 and all(r["ok"] for r in via_rtsp)
    decoded: dict[int, list] = {}
    for r in via_rtsp:  # meta.pts says which frame of the file each result is about
        if "pts" in r.get("meta", {}):
            decoded.setdefault(round(r["meta"]["pts"] * FPS), r["detections"])
    assert len(decoded) >= 30 and all(0 <= k < len(scenes) for k in decoded)
    raw_by_index = {seqs[r["seq"]]: r["detections"] for r in raw}
    ours, theirs = score(decoded, scenes), score({k: raw_by_index[k] for k in decoded}, scenes)
    print(f"mAP@0.5 over {len(decoded)} frames: decoded H.264 via RTSP {ours:.3f}, raw frames {theirs:.3f}")
    assert theirs > 0.5  # the detector sees the scenes at all
    assert abs(ours - theirs) <= 0.03, (ours, theirs)


def _watch(proc: subprocess.Popen, lines: list[str]) -> threading.Thread:
    def read() -> None:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def wait_for(lines: list[str], pattern: str, limit_s: float, start: int = 0) -> re.Match:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for line in lines[start:]:
            m = re.search(pattern, line)
            if m:
                return m
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} within {limit_s} s:\n" + "\n".join(lines[-30:]))


COUNTS = re.compile(r"camera (\S+): decoded (\d+) sent (\d+) replaced (\d+) skipped_motion (\d+)(?: unsent (\d+))? "
                    r"reconnects (\d+) \((.*)\)")


def counts_of(line_match: re.Match) -> dict:
    g = line_match.groups()
    return {"decoded": int(g[1]), "sent": int(g[2]), "replaced": int(g[3]), "skipped_motion": int(g[4]),
            "unsent": int(g[5] or 0), "reconnects": int(g[6]), "state": g[7]}


@needs_rtsp
@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_rtsp_server_killed_and_restarted_produce_reconnects_and_counts_add_up(detector_server, decoder):
    if decoder == "ffmpeg" and FFMPEG is None:
        pytest.skip("the ffmpeg program is not installed")
    info = detector_server
    server = RtspServer("--pattern", "320x240@15")
    lines: list[str] = []
    with Subscriber(info["publish"]) as sub:
        wait_subscribed(sub, info["bind"])
        produce = subprocess.Popen([*CLI, "produce", "--connect", info["credit_bind"], "--source", server.url,
                                    "--stream", "yard", "--stats-every", "0.5", "--decoder", decoder], stderr=subprocess.PIPE,
                                   text=True)
        reader = _watch(produce, lines)
        try:
            wait_for(lines, r"camera yard: decoded \d+ sent ([3-9]|\d\d+) ", 60)
            server.kill()  # SIGKILL: no goodbye, the TCP connection just drops
            wait_for(lines, r"is down: ", 30)
            time.sleep(1.5)  # a few reopening attempts find nobody
            server = RtspServer("--pattern", "320x240@15", port=server.port)
            mark = len(lines)
            wait_for(lines, r"is up again", 60, start=mark)
            wait_for(lines, r"camera yard: decoded \d+ sent \d+ replaced \d+ skipped_motion 0 reconnects 1 \(up\)",
                     30, start=mark)
            after = len(lines)
            wait_for(lines, r"camera yard: decoded", 10, start=after)
            produce.send_signal(signal.SIGTERM)
            assert produce.wait(60) == 0, "\n".join(lines)
            reader.join(10)
        finally:
            if produce.poll() is None:
                produce.kill()
            server.stop()
        final = counts_of([m for m in map(COUNTS.search, lines) if m][-1])
        results = collect(sub, "yard", lambda rs: len(rs) >= final["sent"], limit_s=60)
        with pytest.raises(TimeoutError):  # and not one more: every frame sent got exactly one answer
            while True:
                r = sub.recv(timeout=1.5)
                if r.get("stream") == "yard":
                    results.append(r)
                    break
    assert final["state"] == "closed" and final["reconnects"] == 1
    assert final["decoded"] == final["sent"] + final["replaced"] + final["skipped_motion"] + final["unsent"]
    assert final["sent"] == len(results) and all(r["ok"] for r in results)
    assert sum("is down" in line for line in lines) == 1 and sum("is up again" in line for line in lines) == 1


@needs_rtsp
def test_produce_fails_fast_on_a_stream_that_does_not_exist_and_waits_for_one_unreachable(scenes_clip):
    path, _ = scenes_clip
    with rtsp_server("--file", str(path)) as server:
        wrong = server.url.replace("/cam", "/nope")
        r = subprocess.run([*CLI, "produce", "--source", wrong, "--connect", "tcp://127.0.0.1:9"],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and f"{wrong} cannot be opened: Server returned 404 Not Found" in r.stderr
    assert "Traceback" not in r.stderr
    # nobody listens (yet): a camera that may be booting is waited for, said once, until stopped
    port = free_port()
    lines: list[str] = []
    produce = subprocess.Popen([*CLI, "produce", "--source", f"rtsp://127.0.0.1:{port}/cam", "--stats-every", "0.5",
                                "--connect", "tcp://127.0.0.1:9"], stderr=subprocess.PIPE, text=True)
    reader = _watch(produce, lines)
    try:
        wait_for(lines, r"is down: cannot be opened: Connection refused", 30)
        wait_for(lines, r"camera cam0: decoded 0 sent 0 .*\(down: cannot be opened: Connection refused\)", 30)
        time.sleep(2.0)  # more failed attempts: not one more log line about them
        produce.send_signal(signal.SIGTERM)
        assert produce.wait(60) == 0
        reader.join(10)
    finally:
        if produce.poll() is None:
            produce.kill()
    assert sum("is down" in line for line in lines) == 1


# -- HTTP MJPEG ------------------------------------------------------------------------------------------------
class MjpegHandler(http.server.BaseHTTPRequestHandler):
    """multipart/x-mixed-replace as cameras send it; the server's ``plan`` says how each
    connection goes: ``length`` (Content-Length headers), ``bare`` (none: parts end at the next
    boundary), ``cut-length`` / ``cut-bare`` (three whole parts, then half a JPEG and the
    connection closes; the connections after it are ``length``), ``404``, ``html``."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            plan = server.plans.pop(0) if server.plans else server.default
            server.connections += 1
        if plan == "404":
            self.send_error(404, "no such camera")
            return
        if plan == "html":
            body = b"<html>a login page</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", 'multipart/x-mixed-replace; boundary="--frame"')  # the dashes: a quirk
        self.end_headers()
        try:
            self.wfile.write(b"a preamble that is not a part\r\n")
            for i in range(100000):
                if server.stop.is_set():
                    return
                jpeg = server.jpegs[i % len(server.jpegs)]
                if plan.startswith("cut") and i == 3:
                    head = b"--frame\r\nContent-Type: image/jpeg\r\n"
                    head += f"Content-Length: {len(jpeg)}\r\n\r\n".encode() if plan == "cut-length" else b"\r\n"
                    self.wfile.write(head + jpeg[:len(jpeg) // 2])
                    self.wfile.flush()
                    return  # the connection closes in the middle of a JPEG
                head = b"--frame\r\nContent-Type: image/jpeg\r\n"
                if plan != "bare":
                    head += f"Content-Length: {len(jpeg)}\r\n".encode()
                self.wfile.write(head + b"\r\n" + jpeg + b"\r\n")
                self.wfile.flush()
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextlib.contextmanager
def mjpeg_server(*plans: str, default: str = "length"):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MjpegHandler)
    server.daemon_threads = True
    server.plans, server.default, server.lock = list(plans), default, threading.Lock()
    server.stop, server.connections = threading.Event(), 0
    shapes = ShapesGenerator(seed=31)
    server.jpegs = [simplejpeg.encode_jpeg(shapes.frame(160, 120)[0], quality=85) for _ in range(12)]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/video.mjpg"
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.parametrize("plan", ["length", "bare"])
def test_mjpeg_parts_pass_through_undecoded(plan):
    with mjpeg_server(default=plan) as (server, url), open_source(url) as source:
        assert source.live
        frames = take(source, 10)
        for _ in range(5):  # a consumer slower than the camera (a part every 20 ms) gets the newest part
            time.sleep(0.2)
            frames += take(source, 1)
        stats = source.stats()
    assert len(frames) == 15
    served = set(server.jpegs)
    assert all(f.fmt == "jpeg" and f.data in served and (f.width, f.height) == (160, 120) for f in frames)
    parts = [int(f.origin.rsplit(" ", 1)[1]) for f in frames]
    assert parts == sorted(parts) and len(set(parts)) == 15  # newest first, in order
    skipped = sum(b - a - 1 for a, b in zip(parts, parts[1:]))
    assert skipped > 0 and stats["replaced"] >= skipped  # every part not taken is counted
    assert stats["decoded"] == stats["taken"] + stats["replaced"] + stats["pending"]


@pytest.mark.parametrize("plan", ["cut-length", "cut-bare"])
def test_an_mjpeg_stream_cut_mid_jpeg_drops_that_part_and_reconnects(plan):
    with mjpeg_server(plan) as (server, url), open_source(url) as source:
        frames = take(source, 1)
        deadline = time.monotonic() + 30
        while source.reconnects < 1 and time.monotonic() < deadline:
            frames += take(source, 1, limit_s=1)
        frames += take(source, 5)
        stats = source.stats()
        cut = source.cut
    served = set(server.jpegs)
    assert stats["reconnects"] >= 1 and cut == 1 and server.connections >= 2
    assert frames and all(f.data in served for f in frames)  # never half a JPEG
    assert stats["decoded"] == stats["taken"] + stats["replaced"] + stats["pending"]


def test_mjpeg_urls_that_are_no_camera_are_said():
    with mjpeg_server("404", "html") as (_, url):
        with pytest.raises(SourceError, match=r"video\.mjpg cannot be opened: HTTP 404"):
            open_source(url)
        with pytest.raises(SourceError, match=r"is not an MJPEG stream: its Content-Type is 'text/html'"):
            open_source(url)
    port = free_port()
    with pytest.raises(SourceError, match=rf"http://127\.0\.0\.1:{port}/ cannot be opened: .*refused"):
        open_source(f"http://127.0.0.1:{port}/")


# -- cameras.toml ----------------------------------------------------------------------------------------------
def test_cameras_toml_mistakes_name_the_file_the_camera_and_the_key(tmp_path):
    from streampi.cli._cameras import load_cameras

    cases = {
        '[[camera]]\nstream = "a"\nsource = "synthetic"\nfsp = 5\n': r"camera a: unknown key 'fsp' \(did you mean 'fps'\?\)",
        '[[camera]]\nstream = "a"\n': r"camera a: source is missing",
        '[[camera]]\nstream = "a"\nsource = "x"\n[[camera]]\nstream = "a"\nsource = "y"\n': r"same stream name",
        '[[camera]]\nstream = "a"\nsource = "x"\nfps = "5"\n': r"camera a: fps: expected int or float, got '5'",
        '[[camera]]\nstream = "a"\nsource = "x"\ndecoder = "vlc"\n': r"decoder must be one of pyav, ffmpeg",
        '[defaults]\nmotion = 1\n[[camera]]\nstream = "a"\nsource = "x"\n': r"\[defaults\] motion: expected bool",
        'stats-every = 5\n': r"no cameras",
        'cameras = []\n': r"unknown top-level key 'cameras'",
        '[[camera]\n': r"not valid TOML",
    }
    for text, message in cases.items():
        path = tmp_path / "cameras.toml"
        path.write_text(text)
        with pytest.raises(StreampiError, match=rf"{re.escape(str(path))}: .*{message}"):
            load_cameras(path)
    shipped, settings = load_cameras(Path(__file__).parents[1] / "contrib" / "cameras.toml")
    assert len(shipped) >= 2 and settings["stats_every"] > 0


@needs_rtsp
def test_one_produce_runs_several_cameras_from_cameras_toml(tmp_path, scenes_clip, detector_server):
    info = detector_server
    with rtsp_server("--pattern", "320x240@15") as rtsp, mjpeg_server() as (_, mjpeg):
        config = tmp_path / "cameras.toml"
        config.write_text(f'stats-every = 0\n[defaults]\nconnect = "{info["credit_bind"]}"\nfps = 4\n'
                          f'[[camera]]\nstream = "door"\nsource = "{rtsp.url}"\n'
                          f'[[camera]]\nstream = "shed"\nsource = "{mjpeg}"\nfps = 8\n'
                          f'[[camera]]\nstream = "porch"\nsource = "{rtsp.url}"\ndecoder = "ffmpeg"\n')
        with Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["bind"])
            r = subprocess.run([*CLI, "produce", "--config", str(config), "--count", "6"], capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            got: list[dict] = []
            deadline = time.monotonic() + 60
            while len(got) < 18 and time.monotonic() < deadline:
                try:
                    got.append(sub.recv(timeout=0.5))
                except TimeoutError:
                    pass
    finals = {m[1]: counts_of(m) for m in map(COUNTS.search, r.stderr.splitlines()) if m}
    assert set(finals) == {"door", "shed", "porch"}
    for counts in finals.values():
        assert counts["sent"] == 6 and counts["decoded"] == counts["sent"] + counts["replaced"]
    by_stream = {s: [x for x in got if x.get("stream") == s] for s in finals}
    assert all(len(v) == 6 and all(x["ok"] for x in v) for v in by_stream.values())


PRODUCE_UNIT = Path(__file__).parents[1] / "contrib" / "streampi-produce.service"


def test_the_produce_unit_runs_the_cameras_config_and_passes_systemd_analyze(tmp_path):
    text = PRODUCE_UNIT.read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith(("#", "["))
                    and "=" in line)
    assert settings["ExecStart"].endswith("streampi produce --config /etc/streampi/cameras.toml")
    assert settings["Restart"] == "on-failure" and settings["User"] == "streampi"
    code, out, problems = systemd_verify(text, "streampi-produce.service", tmp_path,
                                         ignore=("streampi.service",))  # After= the server's unit, absent here
    assert code == 0 and not problems, out


# -- motion gating at the camera (streampi.sources.motion) -----------------------------------------------------
@needs_ffmpeg
def test_produce_motion_sends_the_moving_frames_and_skips_the_idle_ones(tmp_path, detector_server):
    """A procedural driveway (still, noisy, light drifting; one object crossing at 12 s) as H.264,
    through ``produce --motion`` to a real server: idle frames stay at the camera, the crossing's
    first second reaches the server whole, and every frame is counted once."""
    pytest.importorskip("streampi.sources.motion", reason="the motion gate (streampi.sources.motion) is not here")
    from streampi.sources.scene import MotionScene, Movement

    fps, seconds = 10, 30
    scene = MotionScene(320, 240, fps=fps, seconds=seconds, seed=3,
                        script=(Movement(12.0, 4.0, 0.15, 0.5, 0.14, 0.0, radius=0.12, luma=230.0),))
    n = len(scene)
    clip = write_h264(tmp_path / "driveway.mp4", [scene.frame(i)[0] for i in range(n)], fps=fps, gop=fps)
    moving = np.asarray(scene.moving, bool)
    info = detector_server
    with Subscriber(info["publish"]) as sub:
        wait_subscribed(sub, info["bind"])
        r = subprocess.run([*CLI, "produce", "--connect", info["credit_bind"], "--source", str(clip), "--stream",
                            "drive", "--motion", "--idle-every", "10", "--motion-hold", "2", "--fps", "0",
                            "--seconds", "0", "--count", str(n), "--stats-every", "0"],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        final = counts_of([m for m in map(COUNTS.search, r.stderr.splitlines()) if m][-1])
        results = collect(sub, "drive", lambda rs: len(rs) >= final["sent"])
        with pytest.raises(TimeoutError):  # nothing more: skipped frames never reached the server
            while True:
                if sub.recv(timeout=1.5).get("stream") == "drive":
                    break
    assert final["decoded"] == n == final["sent"] + final["replaced"] + final["skipped_motion"] + final["unsent"]
    assert len(results) == final["sent"] and all(x["ok"] for x in results)
    sent = {round(x["meta"]["pts"] * fps) for x in results}
    first = int(np.argmax(moving))
    assert all(i in sent for i in range(first, first + fps) if moving[i])  # the first second of the crossing
    last_motion = np.maximum.accumulate(np.where(moving, np.arange(n), -10 * fps))
    idle = [i for i in range(n) if not moving[i] and i - last_motion[i] > 3 * fps]  # past the hold, and then some
    sent_idle = [i for i in idle if i in sent]
    assert len(idle) > 150 and len(sent_idle) <= 0.2 * len(idle), (len(sent_idle), len(idle))
    assert final["skipped_motion"] >= 0.8 * len(idle)
