"""What several test modules share: load generators and result checks for servers under test,
a raw v1.1 producer written from docs/protocol.md, a Prometheus scrape, and the guarded
buffers and argument sets of the compiled kernel. Plain functions and classes (the test
modules import them by name); nothing here is a test."""

from __future__ import annotations

import collections
import ctypes
import mmap
import os
import shutil
import subprocess
import threading
import time
import urllib.request

import cv2
import msgpack
import numpy as np
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from streampi.client import Producer, Subscriber
from streampi.preprocess import _kernels
from streampi.testing import ServerThread

#: scales every hypothesis run of the kernel tests (the arm64 check runs under emulation, 10-30x slower)
EXAMPLES = float(os.environ.get("STREAMPI_EXAMPLES_SCALE", "1"))


# -- a server under load: who sent what, who got what -------------------------------------------------
#: a 640×480 RGB camera frame of noise
FRAME = np.random.default_rng(3).integers(0, 256, (480, 640, 3), np.uint8)


class Load:
    """``producers`` threads, each sending to ``streams_each`` streams at ``rate`` frames/s
    (per thread) for ``seconds`` (bounded in count and time); records what was sent: what
    left the camera (a v1.1 producer replaces a frame that finds no credit, policy latest:
    that one is counted in ``replaced`` and never reaches the server)."""

    def __init__(self, frames_ep: str, producers: int = 4, streams_each: int = 2, rate: float = 60.0,
                 seconds: float = 6.0) -> None:
        self.sent: dict[tuple[str, int], int] = {}
        self.replaced = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(frames_ep, p, streams_each, rate, seconds),
                                          daemon=True) for p in range(producers)]

    def _run(self, ep: str, p: int, k: int, rate: float, seconds: float) -> None:
        # linger=None: frames still queued here when the load ends must reach the server
        prods = [Producer(ep, stream=f"p{p}s{s}", linger=None,
                          on_drop=lambda seq, name=f"p{p}s{s}": self._replace(name, seq)) for s in range(k)]
        t0 = time.monotonic()
        n = 0
        try:
            while time.monotonic() - t0 < seconds and n < rate * seconds:
                for prod in prods:
                    try:
                        seq = prod.send(FRAME, timeout=5)
                    except TimeoutError:
                        continue
                    with self._lock:
                        self.sent[(prod.stream, seq)] = 1
                n += 1
                time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        finally:
            for prod in prods:
                prod.close()

    def _replace(self, stream: str, seq: int) -> None:
        with self._lock:
            del self.sent[(stream, seq)]
            self.replaced += 1

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self._threads:
            t.join(60)


def collect_until(sub: Subscriber, wanted, timeout: float = 60.0) -> list[dict]:
    """Receive results until ``wanted()`` (given what came so far) is true, or ``timeout``;
    then half a second more, to catch duplicates."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not wanted(out):
        try:
            out.append(sub.recv(timeout=0.5))
        except TimeoutError:
            pass
    try:
        while True:
            out.append(sub.recv(timeout=0.5))
    except TimeoutError:
        pass
    return out


def results_until(sub: Subscriber, done, timeout: float = 30.0) -> list[dict]:
    """Results (``_errors`` left out) until ``done(results)`` says so; fails after ``timeout``."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(out):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"only {len(out)} results within {timeout} s: {[r.get('seq') for r in out]}")
        try:
            r = sub.recv(timeout=min(left, 1.0))
        except TimeoutError:
            continue
        if r["stream"] != "_errors":
            out.append(r)
    return out


def frame_results(results: list[dict]) -> dict[tuple[str, int], list[dict]]:
    by_frame: dict[tuple[str, int], list[dict]] = collections.defaultdict(list)
    for r in results:
        if r["stream"] != "_errors":
            by_frame[(r["stream"], r["seq"])].append(r)
    return by_frame


def assert_exactly_once(sent: dict, results: list[dict]) -> collections.Counter:
    by_frame = frame_results(results)
    missing = [k for k in sent if k not in by_frame]
    doubled = {k: len(v) for k, v in by_frame.items() if len(v) > 1}
    extra = [k for k in by_frame if k not in sent]
    assert not missing, f"{len(missing)} frames got no result, e.g. {missing[:5]}"
    assert not doubled, f"frames answered more than once: {list(doubled.items())[:5]}"
    assert not extra, f"results for frames never sent: {extra[:5]}"
    return collections.Counter("ok" if r[0]["ok"] else r[0]["error"]["code"] for r in by_frame.values())


def codes(results: list[dict]) -> dict[str, int]:
    """Results counted by outcome: ``ok`` or the error code."""
    out: dict[str, int] = {}
    for r in results:
        key = "ok" if r["ok"] else r["error"]["code"]
        out[key] = out.get(key, 0) + 1
    return out


def worker_pids(st: ServerThread) -> list[int]:
    return [w["pid"] for w in st.server.status()["workers"]]


def wait_workers(st: ServerThread, n: int, not_pids: set, timeout: float = 10.0) -> float:
    """Seconds until ``n`` workers are ready and none has a pid in ``not_pids``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        ws = st.server.status()["workers"]
        if sum(w["state"] == "ready" and w["pid"] not in not_pids for w in ws) == n:
            return time.monotonic() - t0
        time.sleep(0.01)
    raise AssertionError(f"workers not back to {n} in {timeout} s: {st.server.status()['workers']}")


def wait_holder(st: ServerThread, key: list, not_pids: list, timeout: float = 10.0) -> dict:
    """The worker (its status entry) that holds frame ``key`` (``[stream, seq]``), once one does
    whose pid is not in ``not_pids``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in st.server.status()["workers"]:
            if key in w["holding"] and w["pid"] not in not_pids:
                return w
        time.sleep(0.002)
    raise AssertionError(f"no worker took frame {key}: {st.server.status()['workers']}")


class RawDealer:
    """A v1.1 producer written from docs/protocol.md alone."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def credit(self, timeout: float = 5.0) -> dict:
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError("no credit message")
        kind, body = self.sock.recv_multipart()
        assert kind == b"credit"
        return msgpack.unpackb(body)

    def credit_until(self, acked: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            c = self.credit(max(0.01, deadline - time.monotonic()))
            if c["acked"] >= acked:
                return c

    def close(self) -> None:
        self.sock.close()


# -- Prometheus, scraped over HTTP --------------------------------------------------------------------
def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page, keyed by (name, sorted labels)."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- the compiled kernel, called directly ------------------------------------------------------------
CODES = _kernels.FORMAT_CODES
PACKED = {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4, "gray": 1}
PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def guarded(data: bytes | np.ndarray, writable: bool = False) -> np.ndarray:
    """A uint8 array holding ``data`` whose last byte is the last byte before an inaccessible page."""
    raw = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), np.uint8)
    n = raw.size
    pages = (n + PAGE - 1) // PAGE + 1
    region = mmap.mmap(-1, pages * PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    anchor = ctypes.c_char.from_buffer(region)
    base = ctypes.addressof(anchor)
    del anchor
    if _libc.mprotect(base + (pages - 1) * PAGE, PAGE, 0) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")
    start = (pages - 1) * PAGE - n
    arr = np.frombuffer(region, np.uint8, count=n, offset=start)
    arr[:] = raw
    if not writable:
        arr.flags.writeable = False
    return arr


def frame_bytes(fmt: str, w: int, h: int) -> int:
    """Bytes of a raw frame, written here from docs/protocol.md (not the package's own function)."""
    if fmt in ("i420", "nv12"):
        return w * h + 2 * (w // 2) * (h // 2)
    return w * h * PACKED[fmt]


def valid_args(fmt="rgb", w=8, h=6, out=(4, 5, 3), itemsize=1, seed=0):
    """A consistent argument set: the whole frame stretched over the whole slot, identity LUT."""
    rng = np.random.default_rng(seed)
    oh, ow, oc = out
    lut = np.tile(np.arange(256, dtype=np.uint8), oc) if itemsize == 1 else \
        np.tile(np.arange(256, dtype=np.float32), oc).view(np.uint8)
    return dict(src=rng.integers(0, 256, frame_bytes(fmt, w, h), dtype=np.uint8), fmt=CODES[fmt], src_w=w, src_h=h,
                cx=0, cy=0, cw=w, ch=h, out=np.zeros(ow * oh * oc * itemsize, np.uint8), out_w=ow, out_h=oh,
                out_c=oc, itemsize=itemsize, dx0=0, dy0=0, dw=ow, dh=oh, lut=lut,
                pad=np.zeros(oc * itemsize, np.uint8), swap_rb=False, full_range=False, area=False)


def guard_all(a: dict) -> dict:
    """``a`` with every buffer moved to the end of a guarded page."""
    return {**a, "src": guarded(a["src"]), "out": guarded(a["out"], writable=True), "lut": guarded(a["lut"]),
            "pad": guarded(a["pad"])}


def make_frame(rng: np.random.Generator, fmt: str, w: int, h: int, smooth: bool) -> np.ndarray:
    """A frame as a NumPy array of the format's natural shape."""
    if fmt in ("i420", "nv12"):
        return rng.integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)
    n = {"gray": 1, "rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4}[fmt]
    img = rng.integers(0, 256, (h, w, n), dtype=np.uint8)
    if smooth and w > 4 and h > 4:
        img = cv2.GaussianBlur(img, (0, 0), 2).reshape(h, w, n)
    return img if n > 1 else img[..., 0]


def simd_build(kind: str = "vector"):
    """The hand-vectorised build this machine can run (AVX2 on x86-64, NEON on aarch64), if any;
    ``kind="avx512"``: the AVX-512 build of x86-64."""
    import importlib
    import platform

    pp = importlib.import_module("streampi.preprocess")
    names = {"x86_64": "_kernels_avx2", "amd64": "_kernels_avx2", "aarch64": "_kernels_neon", "arm64": "_kernels_neon"}
    name = names.get(platform.machine().lower())
    if name is None:
        pytest.skip(f"no vectorised build for {platform.machine()}")
    if kind == "avx512":
        if not name.endswith("avx2"):
            pytest.skip(f"no AVX-512 build for {platform.machine()}")
        if not all(pp._cpu_has(f) for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
            pytest.skip("this CPU has no AVX-512 (F, BW, VL, DQ)")
        name = "_kernels_avx512"
    if name.endswith("avx2") and not pp._cpu_has("avx2"):
        pytest.skip("this CPU has no AVX2")
    try:
        return importlib.import_module(f"streampi._ext.{name}")
    except ImportError:
        pytest.fail(f"streampi._ext.{name} is not built on {platform.machine()}")


def systemd_verify(text: str, name: str, tmp_path, ignore: tuple[str, ...] = ()) -> tuple[int, str, list[str]]:
    """``systemd-analyze verify`` of a unit file's ``text`` (skips when it is not installed): its
    return code, its output, and the lines that report a problem. ``verify`` checks that
    ExecStart= exists, so the unit is checked as a copy pointed at an executable here; lines
    about the system bus, /etc/systemd and ``ignore`` (e.g. a unit named in After=) are no problem."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    exe = tmp_path / "streampi"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/streampi/venv/bin/streampi", str(exe)))
    r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    problems = [line for line in out.splitlines()
                if line.strip() and not any(s in line for s in ("Failed to connect to bus", "/etc/systemd", *ignore))]
    return r.returncode, out, problems
