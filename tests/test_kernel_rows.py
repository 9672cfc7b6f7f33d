"""Bands of output rows: a slot written in bands (by one thread or several at once) holds exactly
the bytes of one whole call, and a band writes nothing outside its rows."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest
import simplejpeg
from helpers import EXAMPLES, guard_all, make_frame, valid_args
from helpers import simd_build as _simd_build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streampi.preprocess import Preprocessor, _kernels

pytestmark = pytest.mark.aarch64

FORMATS = ("rgb", "bgr", "rgba", "bgra", "gray", "i420", "nv12", "jpeg")
SENTINEL = 0xA5
# (source size, slot shape): a camera frame into a model input, and odd sizes on both sides
SIZES = [((640, 480), (224, 224, 3)), ((97, 61), (37, 50, 3)), ((64, 48), (29, 17, 1)), ((9, 5), (23, 30, 3))]


def frame_of(fmt: str, w: int, h: int, seed: int = 0):
    """A frame in ``fmt`` (for JPEG: encoded from a smooth RGB frame)."""
    rng = np.random.default_rng(seed + w * 3 + h)
    if fmt == "jpeg":
        return simplejpeg.encode_jpeg(make_frame(rng, "rgb", w, h, smooth=True), quality=90)
    if fmt in ("i420", "nv12"):
        w, h = w + w % 2, h + h % 2
    return make_frame(rng, fmt, w, h, smooth=True)


def splits(pre: Preprocessor, frame) -> list[list[tuple[int, int]]]:
    """Band splits covering the slot: halves, odd thirds, one-row bands at both ends and at the
    rectangle's edges, empty bands, and the even split of ``bands``."""
    oh = pre.shape[0]
    _, dy, _, dh = frame.rect
    out = [[(0, oh // 2), (oh // 2, oh)],
           [(0, oh // 3), (oh // 3, oh - oh // 3 - 1), (oh - oh // 3 - 1, oh)],
           [(0, 0), (0, 1), (1, oh - 1), (oh - 1, oh), (oh, oh)],
           pre.bands(frame, 2), pre.bands(frame, 3)]
    edges = sorted({0, dy, min(dy + 1, oh), dy + dh - 1, dy + dh, min(dy + dh + 1, oh), oh})
    out.append(list(zip(edges[:-1], edges[1:])))
    if oh <= 40:
        out.append([(r, r + 1) for r in range(oh)])
    return out


def make_pre(shape, dtype=np.int8, **kw) -> Preprocessor:
    mean, std = ((0.5,), (0.5,)) if shape[2] == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return Preprocessor(shape, dtype, scale=0.02 if dtype != np.float32 else 0.0, zero_point=3,
                        mean=mean, std=std, pad=114, **kw)


def as_rows(slot: np.ndarray) -> np.ndarray:
    return slot.reshape(slot.shape[0], -1).view(np.uint8)


@pytest.mark.parametrize("size,shape", SIZES)
@pytest.mark.parametrize("interp", ("linear", "area"))
@pytest.mark.parametrize("resize", ("stretch", "letterbox"))
@pytest.mark.parametrize("fmt", FORMATS)
def test_bands_equal_the_whole_call(fmt, resize, interp, size, shape):
    pre = make_pre(shape, resize=resize, interpolation=interp, channels="bgr" if fmt == "rgba" else "rgb")
    data = frame_of(fmt, *size)
    whole, transform = pre(data, fmt)
    frame = pre.prepare(data, fmt)
    assert frame.transform == transform
    assert not (as_rows(whole) == SENTINEL).all()
    for split in splits(pre, frame):
        assert split[0][0] == 0 and split[-1][1] == shape[0], split
        slot = np.full(shape, SENTINEL, np.uint8).view(pre.dtype)
        for row0, row1 in split:
            before = as_rows(slot).copy()
            pre.write(frame, slot, (row0, row1))
            after = as_rows(slot)
            assert np.array_equal(after[row0:row1], as_rows(whole)[row0:row1]), (split, row0, row1)
            outside = np.ones(shape[0], bool)
            outside[row0:row1] = False
            assert np.array_equal(after[outside], before[outside]), f"band {(row0, row1)} wrote outside its rows"
        assert np.array_equal(as_rows(slot), as_rows(whole)), split


@pytest.mark.parametrize("fmt", FORMATS)
def test_untouched_rows_keep_the_sentinel(fmt):
    """A band of a letterboxed slot leaves every other byte as it was (pad rows included)."""
    pre = make_pre((120, 160, 3), resize="letterbox", interpolation="linear")
    frame = pre.prepare(frame_of(fmt, 320, 100), fmt)
    _, dy, _, dh = frame.rect
    assert dy > 2, "the case needs padding rows above the picture"
    for band in [(0, 1), (dy - 1, dy + 1), (dy + dh // 2, dy + dh // 2 + 1), (dy + dh - 1, 120), (5, 5)]:
        slot = np.full((120, 160, 3), SENTINEL, np.uint8).view(np.int8)
        pre.write(frame, slot, band)
        rows = as_rows(slot)
        assert (np.delete(rows, np.s_[band[0]:band[1]], axis=0) == SENTINEL).all(), band


def test_call_with_rows_and_its_transform():
    """``__call__(rows=...)`` writes the band only and returns the whole frame's transform."""
    pre = make_pre((224, 224, 3), resize="letterbox")
    data = frame_of("jpeg", 640, 360)
    whole, transform = pre(data, "jpeg")
    slot = np.full((224, 224, 3), SENTINEL, np.uint8).view(np.int8)
    for band in [(0, 100), (100, 224)]:
        _, t = pre(data, "jpeg", out=slot, rows=band)
        assert t == transform
    assert np.array_equal(slot, whole)


@pytest.mark.parametrize("dtype", (np.int8, np.uint8, np.float32))
@pytest.mark.parametrize("fmt,size,interp", [("rgb", (1920, 1080), "area"), ("i420", (1280, 720), "linear"),
                                             ("nv12", (1280, 720), "area"), ("bgra", (640, 480), "linear"),
                                             ("jpeg", (1280, 720), "area")])
def test_two_threads_fill_two_halves_at_once(fmt, size, interp, dtype):
    """Real threads, started together by a barrier, write the two halves of one slot (the kernel
    runs without the GIL): every time the slot equals the whole call's bytes."""
    pre = make_pre((224, 224, 3), dtype, resize="letterbox", interpolation=interp)
    data = frame_of(fmt, *size)
    whole, _ = pre(data, fmt)
    frame = pre.prepare(data, fmt)
    halves = pre.bands(frame, 2)
    rounds = 20
    slot = pre.new_slot()
    barrier = threading.Barrier(3, timeout=30)  # the two writers and this thread, which checks
    errors: list[BaseException] = []

    def worker(band):
        try:
            for _ in range(rounds):
                barrier.wait()  # the slot was reset
                pre.write(frame, slot, band)
                barrier.wait()  # both halves written
                barrier.wait()  # checked
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(band,), daemon=True) for band in halves]
    for t in threads:
        t.start()
    mismatches = 0
    try:  # a failing writer aborts the barrier: the waits here then raise instead of hanging
        for _ in range(rounds):
            slot.view(np.uint8)[...] = SENTINEL
            barrier.wait()
            barrier.wait()
            mismatches += not np.array_equal(slot.view(np.uint8), whole.view(np.uint8))
            barrier.wait()
    finally:
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert mismatches == 0, f"{mismatches} of {rounds} rounds differ from the whole call"


@pytest.mark.parametrize("fmt", ("rgb", "bgra", "gray", "i420", "nv12"))
@pytest.mark.parametrize("interp", ("linear", "area"))
def test_builds_agree_on_bands(fmt, interp):
    """Bands written by the vectorised build (AVX2 or NEON) equal the baseline build's whole call."""
    simd = _simd_build()
    base = importlib.import_module("streampi._ext._kernels")
    pp = importlib.import_module("streampi.preprocess")
    for size, shape, resize in [((641, 479), (200, 300, 3), "letterbox"), ((333, 211), (96, 128, 3), "crop"),
                                ((1921, 1079), (224, 224, 1), "stretch")]:
        pre = make_pre(shape, resize=resize, interpolation=interp)
        data = frame_of(fmt, *size)
        try:
            pp._kernels = base
            whole, _ = pre(data, fmt)
            pp._kernels = simd
            frame = pre.prepare(data, fmt)
            slot = np.full(shape, SENTINEL, np.uint8).view(np.int8)
            for band in [(0, 1), (1, shape[0] // 2 + 1), (shape[0] // 2 + 1, shape[0])]:
                pre.write(frame, slot, band)
        finally:
            pp._kernels = pp._load_kernels()[0]
        assert np.array_equal(slot, whole), (fmt, interp, size, shape)


# -- bad bands ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,match", [((-1, 4), "not a band"), ((0, 25), "not a band"), ((5, 4), "not a band"),
                                        ((3,), "pair"), (5, "pair"), ((0.0, 4), "two integers"),
                                        ((True, 4), "two integers"), (("0", "4"), "two integers")])
def test_bad_band_is_a_clear_error(rows, match):
    pre = make_pre((24, 32, 3))
    frame = pre.prepare(frame_of("rgb", 64, 48), "rgb")
    slot = np.full((24, 32, 3), SENTINEL, np.uint8).view(np.int8)
    with pytest.raises(ValueError, match=match):
        pre.write(frame, slot, rows)
    with pytest.raises(ValueError, match=match):
        pre(frame_of("rgb", 64, 48), "rgb", out=slot, rows=rows)
    assert (slot.view(np.uint8) == SENTINEL).all()


def test_write_takes_a_prepared_frame_and_a_proper_slot():
    pre = make_pre((24, 32, 3))
    frame = pre.prepare(frame_of("rgb", 64, 48), "rgb")
    with pytest.raises(TypeError, match="PreparedFrame"):
        pre.write(frame_of("rgb", 64, 48), pre.new_slot(), (0, 4))
    with pytest.raises(ValueError, match="out must have shape"):
        pre.write(frame, np.zeros((24, 32, 1), np.int8), (0, 4))


@pytest.mark.parametrize("row0,row1", [(-1, 3), (0, 7), (4, 3), (7, 7)])
def test_kernel_refuses_a_band_outside_the_slot(row0, row1):
    """The compiled entry checks the band itself (its loops have no bounds checks)."""
    src = np.arange(8 * 6 * 3, dtype=np.uint8)
    out = np.full(6 * 5 * 3, SENTINEL, np.uint8)
    lut = np.tile(np.arange(256, dtype=np.uint8), 3)
    args = (src, _kernels.FORMAT_CODES["rgb"], 8, 6, 0, 0, 8, 6, out, 5, 6, 3, 1, 0, 0, 5, 6, lut,
            np.zeros(3, np.uint8), False, False, False)
    if (row0, row1) == (7, 7):
        row0, row1 = 6, 6  # the empty band at the end is valid: nothing is written
        _kernels.resize_quantize(*args, row0, row1)
        assert (out == SENTINEL).all()
        return
    with pytest.raises(ValueError, match=r"band of rows .* is not inside"):
        _kernels.resize_quantize(*args, row0, row1)
    with pytest.raises(TypeError, match="row0 must be an integer"):
        _kernels.resize_quantize(*args, 1.5, 3)
    assert (out == SENTINEL).all()


def test_bands_split_the_picture_rows_evenly():
    pre = make_pre((224, 224, 3), resize="letterbox")
    frame = pre.prepare(frame_of("rgb", 640, 360), "rgb")
    _, dy, _, dh = frame.rect
    assert pre.bands(frame, 1) == [(0, 224)]
    two = pre.bands(frame, 2)
    assert two == [(0, dy + dh // 2), (dy + dh // 2, 224)]
    assert len(pre.bands(frame, 5)) == 5
    for n in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            pre.bands(frame, n)


def test_band_count_splits_a_frame_only_where_the_split_pays():
    """Handing a band to another thread costs about BAND_OVERHEAD_US: bilinear frames into 224²
    (~85–170 µs whole) stay whole, area frames of 640×480 and up are split, the more threads the
    larger the frame; never more bands than threads."""
    lin, area = make_pre((224, 224, 3), interpolation="linear"), make_pre((224, 224, 3), interpolation="area")

    def count(pre, fmt, w, h, threads=2):
        return pre.band_count(pre.prepare(frame_of(fmt, w, h), fmt), threads)

    for fmt in ("rgb", "bgra", "i420", "nv12"):
        for w, h in ((640, 480), (1280, 720), (1920, 1080)):
            assert count(lin, fmt, w, h) == 1, (fmt, w, h)
    assert count(area, "rgb", 640, 480) == 2
    assert count(area, "i420", 1280, 720) == 2
    small = make_pre((64, 64, 3), interpolation="area")
    assert count(small, "rgb", 640, 480) == 1  # ~0.1 ms: half of it saves less than the hand-off
    assert count(small, "rgb", 1920, 1080) == 2
    fhd = area.prepare(frame_of("rgb", 1920, 1080), "rgb")
    counts = [area.band_count(fhd, n) for n in range(1, 7)]
    assert counts[:2] == [1, 2] and 3 <= counts[-1] <= 5
    assert counts == sorted(counts) and all(c <= n for n, c in enumerate(counts, 1))
    # the estimate grows with the work: source pixels for area, 4:2:0 conversion, output channels
    est = {fmt: area.kernel_cost_us(area.prepare(frame_of(fmt, 1280, 720), fmt)) for fmt in ("rgb", "i420")}
    assert est["i420"] > est["rgb"] > area.kernel_cost_us(area.prepare(frame_of("rgb", 640, 480), "rgb"))
    for n in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            lin.band_count(fhd, n)


# -- fuzzing bands of the compiled entry -------------------------------------------------------
def call_band(a: dict, row0: int = 0, row1: int | None = None) -> None:
    _kernels.resize_quantize(a["src"], a["fmt"], a["src_w"], a["src_h"], a["cx"], a["cy"], a["cw"], a["ch"],
                             a["out"], a["out_w"], a["out_h"], a["out_c"], a["itemsize"], a["dx0"], a["dy0"],
                             a["dw"], a["dh"], a["lut"], a["pad"], a["swap_rb"], a["full_range"], a["area"],
                             row0, row1)


@settings(max_examples=max(20, int(300 * EXAMPLES)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_bands_of_random_calls(data):
    """Any consistent call (format, crop, destination rectangle, channels, element size, both
    resamplings), any band: the band equals the whole call's rows, every other byte of the slot
    keeps the sentinel, and the source, slot and tables end right before an inaccessible page
    (a read or write past them is a SIGSEGV)."""
    draw = data.draw
    fmt = draw(st.sampled_from(("rgb", "bgr", "rgba", "bgra", "gray", "i420", "nv12")))
    w, h = draw(st.integers(1, 90)), draw(st.integers(1, 40))
    if fmt in ("i420", "nv12"):
        w, h = w + w % 2, h + h % 2
    cw, ch = draw(st.integers(1, w)), draw(st.integers(1, h))
    cx, cy = draw(st.integers(0, w - cw)), draw(st.integers(0, h - ch))
    ow, oh = draw(st.integers(1, 70)), draw(st.integers(1, 30))
    dw, dh = draw(st.integers(1, ow)), draw(st.integers(1, oh))
    dx, dy = draw(st.integers(0, ow - dw)), draw(st.integers(0, oh - dh))
    oc, itemsize = draw(st.sampled_from((1, 3))), draw(st.sampled_from((1, 4)))
    row0 = draw(st.integers(0, oh))
    row1 = draw(st.integers(row0, oh))
    a = valid_args(fmt, w, h, (oh, ow, oc), itemsize, seed=draw(st.integers(0, 2**16)))
    a.update(cx=cx, cy=cy, cw=cw, ch=ch, dx0=dx, dy0=dy, dw=dw, dh=dh, swap_rb=draw(st.booleans()),
              full_range=draw(st.booleans()), area=draw(st.booleans()) and cw >= dw and ch >= dh,
              pad=np.arange(1, oc * itemsize + 1, dtype=np.uint8))
    whole = np.zeros_like(a["out"])
    call_band({**a, "out": whole})
    g = guard_all({**a, "out": np.full_like(a["out"], SENTINEL)})
    call_band(g, row0, row1)
    got = np.asarray(g["out"]).reshape(oh, -1)
    assert np.array_equal(got[row0:row1], whole.reshape(oh, -1)[row0:row1])
    assert (np.delete(got, np.s_[row0:row1], axis=0) == SENTINEL).all()
