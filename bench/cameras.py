#!/usr/bin/env python3
"""What a camera costs on the camera side, in one run.

    python bench/cameras.py [--seconds 20] [--frames 300] [--skip-threads-vs-processes]

* decode CPU per frame of H.264 (libx264 from ffmpeg's testsrc2, a key frame every 2 s as
  cameras send) at 640×360 and 1280×720: PyAV with FFmpeg's threads (``auto``) and with one
  thread (what a camera uses: the least delay), each including the I420 array streampi sends,
  against the ``ffmpeg`` pipe (``--decoder ffmpeg``: the child's CPU plus reading the pipe);
* camera-to-result latency at 5 fps: GStreamer's RTSP server (tests/rtsp_server.py, the system
  Python) serves a 640×360 H.264 file, streampi reads it (PyAV, newest frame), sends it to a
  ``streampi serve`` of the bundled shapes detector and a subscriber takes the result. Split into
  decode (packet in → frame out of the decoder), send (frame out → the server received it: the
  producer, ZeroMQ, loopback) and serve (received → published: queue, preprocessing, inference,
  decoding), and the total (packet in → result in the subscriber);
* four cameras in one ``streampi produce --config`` (threads) against four ``streampi produce``
  processes: the producers' CPU for the same frames;
* the motion gate (bench/motion.py, ``--motion-repeat`` timed calls a line): µs per frame, its
  share of the kernel pass, the frames it saves on the procedural idle view.

CPU times are process times (user + system, all threads; children counted after they exit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "tests" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_clip(path: Path, width: int, height: int, frames: int, fps: int = 25) -> Path:
    cmd = ["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
           f"testsrc2=size={width}x{height}:rate={fps}", "-frames:v", str(frames), "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-g", str(2 * fps), "-bf", "0", "-preset", "veryfast", "-crf", "23", str(path)]
    subprocess.run(cmd, check=True, timeout=600)
    return path


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def decode_cost(path: Path, decoder: str, threads: str | None) -> tuple[float, float, int]:
    """(CPU ms per frame, wall ms per frame, frames) of reading every frame as streampi does."""
    from streampi.sources import open_source

    c0, k0, t0 = own_cpu(), children_cpu(), time.perf_counter()
    n = 0
    with open_source(path, decoder=decoder, threads=threads) as source:
        for _ in source:
            n += 1
    wall = time.perf_counter() - t0
    cpu = own_cpu() - c0 + children_cpu() - k0
    return 1000 * cpu / n, 1000 * wall / n, n


def bench_decode(tmp: Path, frames: int) -> None:
    print(f"\n## decode CPU per frame ({frames} frames of testsrc2, libx264, GOP 2 s; I420 out)\n")
    print("| size | PyAV threads auto | PyAV threads 1 | ffmpeg pipe | pipe / PyAV 1 |")
    print("|---|---|---|---|---|")
    for width, height in ((640, 360), (1280, 720)):
        clip = make_clip(tmp / f"clip{width}.mp4", width, height, frames)
        decode_cost(clip, "pyav", "1")  # warm: libraries loaded, file cached
        auto = decode_cost(clip, "pyav", "auto")
        one = decode_cost(clip, "pyav", "1")
        pipe = decode_cost(clip, "ffmpeg", None)
        print(f"| {width}×{height} | {auto[0]:.2f} ms CPU ({auto[1]:.2f} ms wall) | {one[0]:.2f} ms ({one[1]:.2f}) "
              f"| {pipe[0]:.2f} ms ({pipe[1]:.2f}) | {pipe[0] / one[0]:.2f}× |", flush=True)


@contextlib.contextmanager
def rtsp_file(path: Path):
    proc = subprocess.Popen([SYSTEM_PYTHON, str(LAUNCHER), "--file", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("the RTSP server did not start (tests/rtsp_server.py needs the system Python's gi)")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(20)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_latency(tmp: Path, seconds: float) -> None:
    from streampi.client import Producer, Subscriber
    from streampi.sources import open_source
    from streampi.testing import start_server, wait_subscribed

    print(f"\n## camera-to-result latency at 5 fps (RTSP 640×360 H.264 25 fps, PyAV threads 1, "
          f"shapes_detector, {seconds:g} s)\n")
    clip = make_clip(tmp / "latency.mp4", 640, 360, int(25 * (seconds + 5)))
    proc, info = start_server(["shapes_detector", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*"])
    rows: dict[int, dict] = {}
    try:
        with rtsp_file(clip) as url, Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["bind"])
            done = threading.Event()

            def receive() -> None:
                while not done.is_set():
                    try:
                        r = sub.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    if r.get("stream") == "lat" and r["seq"] in rows:
                        rows[r["seq"]]["result"] = (time.time(), r)

            rx = threading.Thread(target=receive, daemon=True)
            rx.start()
            with open_source(url) as cam, Producer(info["credit_bind"], stream="lat", when_full="replace") as prod:
                t_end, tick = time.monotonic() + seconds, time.monotonic()
                while time.monotonic() < t_end:
                    time.sleep(max(0.0, tick - time.monotonic()))
                    tick += 0.2
                    frame = cam.take(1.0)
                    if frame is None:
                        continue
                    seq = prod.send(frame.data, fmt=frame.fmt, ts=frame.captured)
                    rows[seq] = {"captured": frame.captured, "decoded": frame.decoded}
                prod.flush(2.0)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any("result" not in v for v in rows.values()):
                time.sleep(0.1)
            done.set()
            rx.join(5)
    finally:
        proc.terminate()
        proc.wait(60)
    decode, send, serve, total = [], [], [], []
    for v in rows.values():
        if "result" not in v:
            continue
        arrived, r = v["result"]
        decode.append(1000 * (v["decoded"] - v["captured"]))
        send.append(1000 * (r["timing"]["recv"] - v["decoded"]))
        serve.append(r["timing"]["total_ms"])
        total.append(1000 * (arrived - v["captured"]))
    print(f"{len(total)} of {len(rows)} frames answered\n")
    print("| stage | median ms | p90 ms |")
    print("|---|---|---|")
    for name, values in (("decode", decode), ("send", send), ("serve", serve), ("total (packet in → result)", total)):
        if values:
            print(f"| {name} | {statistics.median(values):.1f} | {pct(values, 0.9):.1f} |")


def bench_threads_vs_processes(tmp: Path, seconds: float) -> None:
    from streampi.testing import start_server

    print(f"\n## four cameras: one process with four threads against four processes ({seconds:g} s, 640×360 "
          f"H.264 25 fps over RTSP, sent at 5 fps)\n")
    clip = make_clip(tmp / "four.mp4", 640, 360, int(25 * (seconds + 10)))
    proc, info = start_server(["shapes_detector", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--policy", "latest"])
    cli = [sys.executable, "-m", "streampi", "produce", "--connect", info["credit_bind"], "--stats-every", "0",
           "--seconds", str(seconds)]
    try:
        results = {}
        with contextlib.ExitStack() as stack:
            urls = [stack.enter_context(rtsp_file(clip))] * 4  # one server, a pipeline per client
            config = tmp / "four.toml"
            config.write_text(f'[defaults]\nconnect = "{info["credit_bind"]}"\n' + "".join(
                f'[[camera]]\nstream = "c{i}"\nsource = "{u}"\n' for i, u in enumerate(urls)))
            for how in ("threads", "processes"):
                k0, t0 = children_cpu(), time.perf_counter()
                if how == "threads":
                    runs = [subprocess.Popen([*cli, "--config", str(config)], stderr=subprocess.PIPE, text=True)]
                else:
                    runs = [subprocess.Popen([*cli, "--source", u, "--stream", f"p{i}"], stderr=subprocess.PIPE,
                                             text=True) for i, u in enumerate(urls)]
                errs = [r.communicate(timeout=seconds + 120)[1] for r in runs]
                cpu = children_cpu() - k0
                sent = sum(int(line.split(" sent ")[1].split()[0]) for e in errs for line in e.splitlines()
                           if line.startswith("camera "))
                results[how] = (cpu, sent, time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(60)
    print("| how | producer CPU s | CPU % of a core | frames sent | CPU ms per frame sent |")
    print("|---|---|---|---|---|")
    for how, (cpu, sent, _) in results.items():
        print(f"| {how} | {cpu:.2f} | {100 * cpu / seconds:.0f} % | {sent} | {1000 * cpu / max(sent, 1):.1f} |")
    t, p = results["threads"][0], results["processes"][0]
    print(f"\nprocesses / threads CPU: {p / t:.2f}×  (each process also pays its own interpreter start-up and "
          f"imports)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300, help="frames per decode measurement")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the latency and four-camera runs")
    p.add_argument("--skip-threads-vs-processes", action="store_true")
    p.add_argument("--motion-repeat", type=int, default=300, help="bench/motion.py --repeat")
    args = p.parse_args()
    if shutil.which("ffmpeg") is None:
        print("bench/cameras.py needs the ffmpeg program (apt install ffmpeg)", file=sys.stderr)
        return 2
    import av

    print(f"# bench/cameras.py: {cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"PyAV {av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}), "
          f"{subprocess.run(['ffmpeg', '-version'], capture_output=True, text=True).stdout.split()[2]} ffmpeg")
    with tempfile.TemporaryDirectory() as tmp:
        bench_decode(Path(tmp), args.frames)
        bench_latency(Path(tmp), args.seconds)
        if not args.skip_threads_vs_processes:
            bench_threads_vs_processes(Path(tmp), args.seconds)
    motion = ROOT / "bench" / "motion.py"
    if motion.exists():
        print("\n## the motion gate (bench/motion.py)\n", flush=True)
        subprocess.run([sys.executable, str(motion), "--repeat", str(args.motion_repeat)], check=False)
    else:
        print("\n(the motion gate's figures: bench/motion.py, not in this tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
