#!/usr/bin/env python3
"""Preprocessing kernels against OpenCV's strongest pipeline, single-threaded, in one run.

    python bench/kernels.py [--repeat 300]

Each line times streampi's fused kernel (convert + resize + normalise/quantize, written into
a preallocated slot) against the fastest of what a user would otherwise write with OpenCV:
``cv2.resize`` then ``cv2.LUT`` (one 256-entry table does normalisation and int8 quantization),
``cv2.resize`` then NumPy arithmetic; YUV and JPEG frames are converted (``cv2.cvtColor``,
``cv2.imdecode``) before either.
All callables of one line are timed interleaved (one call each in turn), so drift between
minutes hits them alike. Prints µs per frame for each and the ratio streampi / best OpenCV.

A second table times one frame written by one call against the same frame split into two bands
of rows written at once by two threads (the calling thread and one pool thread, as a server
would), wall time per frame, and the two bands written one after the other by one thread (the
cost of repeating the per-call setup), with the kernel's cost model (``Preprocessor.kernel_cost_us``)
and the number of bands ``Preprocessor.band_count`` chooses for two threads (the server's
choice; "right" when splitting is chosen exactly where two threads were faster here, which
needs the other core idle, as the server's light path does). This table takes medians always.
``--bands-only`` prints just that table.

``--before PATH`` also times a kernels extension built from another tree (e.g. main's
``streampi/_ext/_kernels_avx2.*.so``) on every line, in the same run: a before/after table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from streampi.preprocess import KERNEL_BUILD, Preprocessor

ROOT = Path(__file__).resolve().parents[1]

SCALE, ZP = 2 / 255, -1  # the bundled int8 models' input quantization ([-1, 1])


def quantize(img: np.ndarray) -> np.ndarray:
    v = img.astype(np.float32) / 127.5 - 1.0
    return np.clip(np.rint(v / SCALE) + ZP, -128, 127).astype(np.int8)


#: normalise + quantize as one table: what cv2.LUT applies to every uint8 value
LUT = quantize(np.arange(256, dtype=np.uint8)).reshape(1, 256)


def lut(img: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, LUT)


STAT = {"median": np.median, "min": np.min}
stat = np.median  # set by --stat


def timeit_interleaved(fns: list, repeat: int, how=None, before=None) -> list[float]:
    """Median (``--stat min``: fastest) µs per call of each function, calling them in turn
    ``repeat`` times after a warm-up; ``before()``, when given, runs untimed before each call."""
    how = how or stat
    for fn in fns:
        for _ in range(5):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for i in range(repeat):
        for k in range(len(fns)):
            j = (k + i) % len(fns)
            if before is not None:
                before()
            t0 = time.perf_counter()
            fns[j]()
            times[j].append(time.perf_counter() - t0)
    return [float(how(t)) * 1e6 for t in times]


def camera_frame(w: int, h: int) -> np.ndarray:
    rng = np.random.default_rng(w)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)


def to_nv12(i420: np.ndarray) -> np.ndarray:
    """The same 4:2:0 frame with U and V interleaved (NV12)."""
    h = i420.shape[0] * 2 // 3
    w = i420.shape[1]
    u, v = i420[h:h + h // 4].reshape(-1), i420[h + h // 4:].reshape(-1)
    return np.concatenate([i420[:h], np.stack([u, v], 1).reshape(h // 2, w)])


def opencv_ways(prepare, interpolation: int) -> dict:
    """The OpenCV pipelines for one line: ``prepare`` gives the RGB image (conversion included)."""
    def resized():
        return cv2.resize(prepare(), (224, 224), interpolation=interpolation)
    return {"resize+LUT": lambda: lut(resized()), "resize+NumPy": lambda: quantize(resized())}


def load_kernels_from(path: Path):
    """A kernels extension module from another build (its file name gives its init function)."""
    name = "streampi._ext." + path.name.split(".")[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path} as a kernels module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OtherBuild(Preprocessor):
    """The same preprocessing through another build's kernel entry (the whole slot: a build from
    before row bands takes no band arguments)."""

    def __init__(self, kernels, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kernels = kernels

    def _write(self, frame, raw_out, rows=None) -> None:
        oh, ow, oc = self.shape
        (cx, cy, cw, ch), (dx, dy, dw, dh) = frame.crop, frame.rect
        self.kernels.resize_quantize(frame.pixels, self.kernels.FORMAT_CODES[frame.fmt], frame.width,
                                     frame.height, cx, cy, cw, ch, raw_out, ow, oh, oc, self.dtype.itemsize,
                                     dx, dy, dw, dh, self._lut_bytes, self._pad_bytes, self.channels == "bgr",
                                     self.full_range, frame.area)


def band_lines(pre_lin: Preprocessor, pre_area: Preprocessor, frames: dict, repeat: int,
               only: str | None = None) -> list[dict]:
    """One call against two bands on two threads (wall time per frame), interleaved."""
    slot = pre_lin.new_slot()
    pool = ThreadPoolExecutor(1)  # the other thread; this one writes the first band
    lines = []
    for name, pre, data, fmt in [
        ("640×480 RGB → 224² int8, area", pre_area, frames["vga"], "rgb"),
        ("640×480 RGB → 224² int8, bilinear", pre_lin, frames["vga"], "rgb"),
        ("1920×1080 RGB → 224² int8, area", pre_area, frames["fhd"], "rgb"),
        ("640×480 I420 → 224² int8, bilinear", pre_lin, frames["vga_i420"], "i420"),
        ("1280×720 I420 → 224² int8, bilinear", pre_lin, frames["i420"], "i420"),
        ("1280×720 JPEG → 224² int8, area (decode once)", pre_area, frames["jpeg"], "jpeg"),
    ]:
        if only and only not in name:
            continue

        def whole(pre=pre, data=data, fmt=fmt):
            pre(data, fmt, out=slot)

        def two_threads(pre=pre, data=data, fmt=fmt):
            frame = pre.prepare(data, fmt)
            first, second = pre.bands(frame, 2)
            other = pool.submit(pre.write, frame, slot, second)
            pre.write(frame, slot, first)
            other.result()

        def one_thread(pre=pre, data=data, fmt=fmt):
            frame = pre.prepare(data, fmt)
            for band in pre.bands(frame, 2):
                pre.write(frame, slot, band)

        # medians whatever --stat says: the fastest two-thread call is a lucky hand-off, not its cost
        one, two, seq = timeit_interleaved([whole, two_threads, one_thread], repeat, np.median)
        frame = pre.prepare(data, fmt)
        model, split = pre.kernel_cost_us(frame), pre.band_count(frame, 2)
        lines.append({"path": name, "one_call_us": one, "two_threads_us": two, "two_bands_one_thread_us": seq,
                      "model_us": model, "bands_chosen": split})
        print(f"| {name} | {one:.0f} | {two:.0f} | {seq:.0f} | {two / one:.2f} | {model:.0f} | "
              f"{split} ({'right' if (split > 1) == (two < one) else 'wrong'}) |", flush=True)
    pool.shutdown()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kernels.json")
    ap.add_argument("--bands-only", action="store_true", help="only the one call vs two threads table")
    ap.add_argument("--only", metavar="TEXT", help="only the lines whose name contains TEXT (e.g. I420)")
    ap.add_argument("--before", type=Path, help="a kernels extension (.so) of another build, timed alongside")
    ap.add_argument("--stat", choices=sorted(STAT), default="median",
                    help="per line, the median call (default) or the fastest (a machine shared with other work)")
    args = ap.parse_args()
    global stat
    stat = STAT[args.stat]
    cv2.setNumThreads(1)
    out_shape = (224, 224, 3)

    def pre(interpolation: str, kernels=None) -> Preprocessor:
        kw = dict(scale=SCALE, zero_point=ZP, mean=(0.5,), std=(0.5,), interpolation=interpolation)
        if kernels is not None:
            return OtherBuild(kernels, out_shape, np.int8, **kw)
        return Preprocessor(out_shape, np.int8, **kw)

    slot = np.empty(out_shape, np.int8)
    vga, hd, fhd = camera_frame(640, 480), camera_frame(1280, 720), camera_frame(1920, 1080)
    vga_bgra = cv2.cvtColor(vga, cv2.COLOR_RGB2BGRA)
    i420, vga_i420, fhd_i420 = (cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420) for f in (hd, vga, fhd))
    nv12, vga_nv12 = to_nv12(i420), to_nv12(vga_i420)
    jpeg = simplejpeg.encode_jpeg(hd, quality=85)
    lin, area = pre("linear"), pre("area")
    before = load_kernels_from(args.before) if args.before else None
    old = {"linear": pre("linear", before), "area": pre("area", before)} if before else {}
    L, A = cv2.INTER_LINEAR, cv2.INTER_AREA
    # (name, interpolation, frame, format, OpenCV's ways)
    lines = [
        ("640×480 RGB → 224² int8, bilinear", "linear", vga, "rgb", opencv_ways(lambda: vga, L)),
        ("640×480 BGRA → 224² int8, bilinear", "linear", vga_bgra, "bgra",
         opencv_ways(lambda: cv2.cvtColor(vga_bgra, cv2.COLOR_BGRA2RGB), L)),
        ("640×480 RGB → 224² int8, area", "area", vga, "rgb", opencv_ways(lambda: vga, A)),
        ("1280×720 RGB → 224² int8, area", "area", hd, "rgb", opencv_ways(lambda: hd, A)),
        ("1920×1080 RGB → 224² int8, bilinear", "linear", fhd, "rgb", opencv_ways(lambda: fhd, L)),
        ("1920×1080 RGB → 224² int8, area", "area", fhd, "rgb", opencv_ways(lambda: fhd, A)),
        ("640×480 I420 → 224² int8, bilinear", "linear", vga_i420, "i420",
         opencv_ways(lambda: cv2.cvtColor(vga_i420, cv2.COLOR_YUV2RGB_I420), L)),
        ("640×480 NV12 → 224² int8, bilinear", "linear", vga_nv12, "nv12",
         opencv_ways(lambda: cv2.cvtColor(vga_nv12, cv2.COLOR_YUV2RGB_NV12), L)),
        ("1920×1080 I420 → 224² int8, bilinear", "linear", fhd_i420, "i420",
         opencv_ways(lambda: cv2.cvtColor(fhd_i420, cv2.COLOR_YUV2RGB_I420), L)),
        ("1280×720 I420 → 224² int8, bilinear", "linear", i420, "i420",
         opencv_ways(lambda: cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420), L)),
        ("1280×720 NV12 → 224² int8, bilinear", "linear", nv12, "nv12",
         opencv_ways(lambda: cv2.cvtColor(nv12, cv2.COLOR_YUV2RGB_NV12), L)),
        ("1280×720 I420 → 224² int8, area", "area", i420, "i420",
         opencv_ways(lambda: cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420), A)),
        ("1280×720 NV12 → 224² int8, area", "area", nv12, "nv12",
         opencv_ways(lambda: cv2.cvtColor(nv12, cv2.COLOR_YUV2RGB_NV12), A)),
        ("1280×720 JPEG → 224² int8, area", "area", jpeg, "jpeg",
         opencv_ways(lambda: cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR),
                                          cv2.COLOR_BGR2RGB), A)),
    ]
    ours = {"linear": lin, "area": area}
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, OpenCV {cv2.__version__}, "
          f"streampi kernels: {KERNEL_BUILD} build, single-threaded, {args.stat} of {args.repeat}, interleaved")
    if before:
        print(f"before: {args.before} ({before.SIMD_BUILD} build), timed in the same run")
        print("| path | before µs | streampi µs | OpenCV resize+LUT µs | OpenCV resize+NumPy µs | "
              "ratio before | ratio to OpenCV's best |")
        print("|---|---|---|---|---|---|---|")
    else:
        print("| path | streampi µs | OpenCV resize+LUT µs | OpenCV resize+NumPy µs | ratio to OpenCV's best |")
        print("|---|---|---|---|---|")
    rows = []
    if args.only:
        lines = [line for line in lines if args.only in line[0]]
    for name, interp, data, fmt, refs in ([] if args.bands_only else lines):
        names = list(refs)
        fns = [lambda p=ours[interp], d=data, f=fmt: p(d, f, out=slot), *refs.values()]
        if before:
            fns.append(lambda p=old[interp], d=data, f=fmt: p(d, f, out=slot))
        got = timeit_interleaved(fns, args.repeat)
        a, ref_us = got[0], dict(zip(names, got[1:1 + len(names)]))
        best = min(ref_us, key=ref_us.get)
        row = {"path": name, "streampi_us": a, "opencv_us": ref_us, "opencv_best": best, "ratio": a / ref_us[best]}
        if before:
            row.update(before_us=got[-1], ratio_before=got[-1] / ref_us[best])
            print(f"| {name} | {got[-1]:.0f} | {a:.0f} | {ref_us['resize+LUT']:.0f} | {ref_us['resize+NumPy']:.0f} | "
                  f"{got[-1] / ref_us[best]:.2f} | {a / ref_us[best]:.2f} |", flush=True)
        else:
            print(f"| {name} | {a:.0f} | {ref_us['resize+LUT']:.0f} | {ref_us['resize+NumPy']:.0f} | "
                  f"{a / ref_us[best]:.2f} |", flush=True)
        rows.append(row)
    print()
    print("| path (one frame) | one call µs | two bands on two threads µs | two bands, one thread µs | "
          "two threads / one call | cost model µs | bands chosen of 2 |")
    print("|---|---|---|---|---|---|---|")
    bands = band_lines(lin, area, {"vga": vga, "fhd": fhd, "i420": i420, "vga_i420": vga_i420, "jpeg": jpeg},
                       args.repeat, args.only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                                    "python": platform.python_version(), "opencv": cv2.__version__,
                                    "kernels": KERNEL_BUILD, "rows": rows, "bands": bands}, indent=2))


if __name__ == "__main__":
    main()
