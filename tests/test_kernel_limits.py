"""The compiled kernel's own argument checks: called directly, with sizes that disagree with the
buffers it is given, it raises ValueError and never reads or writes outside them.

Buffers here end right before a page the process may not touch (``guarded``), so a read or write
past the end kills the test run with SIGSEGV instead of passing unnoticed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import CODES, frame_bytes, guard_all, valid_args
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reference import resize_area, resize_linear, to_rgb_or_gray

from streampi.preprocess import _kernels

pytestmark = pytest.mark.aarch64

def call(a: dict) -> None:
    _kernels.resize_quantize(a["src"], a["fmt"], a["src_w"], a["src_h"], a["cx"], a["cy"], a["cw"], a["ch"],
                             a["out"], a["out_w"], a["out_h"], a["out_c"], a["itemsize"], a["dx0"], a["dy0"],
                             a["dw"], a["dh"], a["lut"], a["pad"], a["swap_rb"], a["full_range"], a["area"])


def twin_levels(a: dict) -> np.ndarray:
    """The NumPy twin of one direct call, as uint8 levels before the LUT (rectangle only)."""
    fmt = {v: k for k, v in CODES.items()}[a["fmt"]]
    img = to_rgb_or_gray(a["src"], fmt, a["src_w"], a["src_h"], a["out_c"], a["full_range"])
    if a["swap_rb"] and a["out_c"] == 3:
        img = img[..., ::-1]
    img = np.ascontiguousarray(img[a["cy"]:a["cy"] + a["ch"], a["cx"]:a["cx"] + a["cw"]])
    small = (resize_area if a["area"] else resize_linear)(img, a["dw"], a["dh"])
    return small.reshape(a["dh"], a["dw"], a["out_c"])


def assert_matches_twin(a: dict, out: np.ndarray) -> None:
    """Inside the rectangle every element is the LUT entry of the twin's level or of a level one
    away (area sums round in another order); outside it, the pad element exactly."""
    oc, item = a["out_c"], a["itemsize"]
    dt = np.uint8 if item == 1 else np.float32
    table = np.asarray(a["lut"]).view(dt).reshape(oc, 256)
    got = np.asarray(out).view(dt).reshape(a["out_h"], a["out_w"], oc)
    pad = np.asarray(a["pad"]).view(dt)
    inside = np.zeros(got.shape[:2], bool)
    inside[a["dy0"]:a["dy0"] + a["dh"], a["dx0"]:a["dx0"] + a["dw"]] = True
    assert np.array_equal(got[~inside], np.broadcast_to(pad, got[~inside].shape)), "pad differs"
    levels = twin_levels(a).astype(int)
    rect = got[a["dy0"]:a["dy0"] + a["dh"], a["dx0"]:a["dx0"] + a["dw"]]
    chan = np.arange(oc)
    ok = np.zeros(rect.shape, bool)
    for step in (0, -1, 1):
        ok |= rect == table[chan, np.clip(levels + step, 0, 255)]
    assert ok.all(), f"{int((~ok).sum())} elements are not the LUT entry of the twin's level (±1)"


def test_valid_call_writes_the_twin_result():
    a = guard_all(valid_args())
    call(a)
    assert_matches_twin(a, a["out"])
    assert np.asarray(a["out"]).any()


def test_guard_page_is_really_there():
    """The guard must fault: a child process reading one byte past a guarded buffer dies of SIGSEGV."""
    import signal
    import subprocess
    import sys

    code = ("import sys, ctypes; sys.path.insert(0, 'tests'); from helpers import guarded; "
            "a = guarded(b'x' * 100); print(ctypes.string_at(a.ctypes.data, 101))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGSEGV, proc


BAD = [
    ("source one byte short", dict(src=np.zeros(8 * 6 * 3 - 1, np.uint8)), "needs 144 bytes, the buffer has 143"),
    ("source one byte long", dict(src=np.zeros(8 * 6 * 3 + 1, np.uint8)), "needs 144 bytes, the buffer has 145"),
    ("width larger than the buffer says", dict(src_w=9, cw=9), "needs 162 bytes"),
    ("zero width", dict(src_w=0, cw=0), "source of 0×6 is empty"),
    ("negative height", dict(src_h=-6, ch=-6), "source of 8×-6 is empty"),
    ("overflowing size", dict(src_w=2**31, src_h=2**31, cw=1, ch=1), "more than the"),
    ("odd 4:2:0 width", dict(fmt=CODES["i420"], src_w=7, cw=7, src=np.zeros(7 * 6 + 2 * 3 * 3, np.uint8)),
     "even width and height"),
    ("unknown format", dict(fmt=7), "unknown format code 7"),
    ("crop past the right edge", dict(cx=1), r"crop \(1, 0, 8×6\) is not inside the source of 8×6"),
    ("crop past the bottom", dict(cy=2, ch=5), "not inside the source"),
    ("negative crop origin", dict(cx=-1, cw=4), "not inside the source"),
    ("empty crop", dict(cw=0), "crop of 0×6 is empty"),
    ("out one byte short", dict(out=np.zeros(59, np.uint8)), "needs 60 bytes, the buffer has 59"),
    ("out one byte long", dict(out=np.zeros(61, np.uint8)), "needs 60 bytes, the buffer has 61"),
    ("out of four channels", dict(out_c=4), "out_c must be 1 or 3"),
    ("two-byte elements", dict(itemsize=2), "itemsize must be 1"),
    ("rectangle past the right edge", dict(dx0=1), "destination rectangle .* is not inside the destination"),
    ("rectangle past the bottom", dict(dy0=3, dh=2), "not inside the destination"),
    ("negative rectangle origin", dict(dy0=-1, dh=2), "not inside the destination"),
    ("empty rectangle", dict(dh=0), "destination rectangle of 5×0 is empty"),
    ("empty destination", dict(out_w=0, dw=0, out=np.zeros(0, np.uint8)), "destination of 0×4 is empty"),
    ("lut too short", dict(lut=np.zeros(767, np.uint8)), "lookup table needs 768 bytes"),
    ("lut of one channel for three", dict(lut=np.zeros(256, np.uint8)), "lookup table needs 768 bytes"),
    ("pad too short", dict(pad=np.zeros(2, np.uint8)), "pad value needs 3 bytes"),
    ("float32 destination with a one-byte LUT", dict(itemsize=4, out=np.zeros(240, np.uint8)), "lookup table needs 3072"),
]


@pytest.mark.parametrize("name,change,match", BAD, ids=[b[0] for b in BAD])
def test_inconsistent_arguments_raise(name, change, match):
    a = valid_args()
    a.update(change)
    a = guard_all(a)
    before = np.asarray(a["out"]).copy()
    with pytest.raises(ValueError, match=match):
        call(a)
    assert np.array_equal(np.asarray(a["out"]), before), "nothing may be written before the checks pass"


@pytest.mark.parametrize("field,value", [("src_w", 8.0), ("cx", "0"), ("dw", None), ("itemsize", True)])
def test_non_integer_sizes_raise_type_error(field, value):
    a = valid_args()
    a[field] = value
    with pytest.raises(TypeError, match=f"{field} must be an integer"):
        call(a)


def test_read_only_destination_is_refused():
    a = valid_args()
    a["out"] = a["out"].copy()
    a["out"].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        call(a)


# -- fuzzing the compiled entry ---------------------------------------------------------------
def consistent(a: dict) -> bool:
    """Written from the kernel's contract, not from its code: does every size fit its buffer?"""
    fmt = {v: k for k, v in CODES.items()}.get(a["fmt"])
    if fmt is None or a["out_c"] not in (1, 3) or a["itemsize"] not in (1, 4):
        return False
    w, h = a["src_w"], a["src_h"]
    if w < 1 or h < 1 or (fmt in ("i420", "nv12") and (w % 2 or h % 2)):
        return False
    if a["src"].size != frame_bytes(fmt, w, h):
        return False
    if not (0 <= a["cx"] and 0 <= a["cy"] and a["cw"] >= 1 and a["ch"] >= 1
            and a["cx"] + a["cw"] <= w and a["cy"] + a["ch"] <= h):
        return False
    ow, oh, oc, item = a["out_w"], a["out_h"], a["out_c"], a["itemsize"]
    if ow < 1 or oh < 1 or a["out"].size != ow * oh * oc * item:
        return False
    if not (0 <= a["dx0"] and 0 <= a["dy0"] and a["dw"] >= 1 and a["dh"] >= 1
            and a["dx0"] + a["dw"] <= ow and a["dy0"] + a["dh"] <= oh):
        return False
    return a["lut"].size == 256 * oc * item and a["pad"].size == oc * item


small = st.integers(1, 40)
jitter = st.sampled_from((0, 0, 0, 0, -1, 1, -2, 2, -100, 2**31, -(2**31) - 1))


@st.composite
def fuzz_args(draw):
    fmt = draw(st.sampled_from(tuple(CODES)))
    w, h = draw(small), draw(small)
    if fmt in ("i420", "nv12"):
        w, h = 2 * w, 2 * h
    oc = draw(st.sampled_from((1, 3)))
    item = draw(st.sampled_from((1, 4)))
    ow, oh = draw(small), draw(small)
    cx, cy = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
    cw, ch = draw(st.integers(1, w - cx)), draw(st.integers(1, h - cy))
    dx, dy = draw(st.integers(0, ow - 1)), draw(st.integers(0, oh - 1))
    dw, dh = draw(st.integers(1, ow - dx)), draw(st.integers(1, oh - dy))
    a = valid_args(fmt, w, h, (oh, ow, oc), item, seed=draw(st.integers(0, 2**16)))
    a.update(cx=cx, cy=cy, cw=cw, ch=ch, dx0=dx, dy0=dy, dw=dw, dh=dh, swap_rb=draw(st.booleans()),
             full_range=draw(st.booleans()), area=draw(st.booleans()))
    # then break some of it: sizes and rectangles off by a little or a lot, buffers a byte off
    for key in draw(st.lists(st.sampled_from(("src_w", "src_h", "cx", "cy", "cw", "ch", "out_w", "out_h", "out_c",
                                              "itemsize", "dx0", "dy0", "dw", "dh", "fmt")), max_size=3)):
        a[key] = a[key] + draw(jitter)
    for key in draw(st.lists(st.sampled_from(("src", "out", "lut", "pad")), max_size=2)):
        a[key] = np.zeros(max(0, a[key].size + draw(st.sampled_from((-1, 1, -3)))), np.uint8)
    return a


FUZZ_EXAMPLES = max(50, int(2500 * float(os.environ.get("STREAMPI_EXAMPLES_SCALE", "1"))))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzz_args())
def test_fuzz_compiled_entry(a):
    """Whatever the sizes, the kernel either refuses them with ValueError or stays inside its
    buffers (guard pages) and writes what the NumPy twin computes."""
    g = guard_all(a)
    if not consistent(a):
        event("inconsistent: refused")
        with pytest.raises(ValueError, match="streampi kernel: "):
            call(g)
        return
    event(f"consistent: ran ({'area' if a['area'] else 'bilinear'})")
    call(g)
    assert_matches_twin(a, g["out"])
