"""The motion gate at the camera (streampi.sources.motion, streampi/_ext/_motion.pyx): the compiled
pass against its NumPy twin, the gate on a procedural camera view with ground truth (idle frames
saved, no moving object's first second missed), the same decisions in every frame format, the
timing rules (motion, hold, idle, skipped), and clear errors for bad frames and options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simplejpeg

from streampi.errors import FrameError
from streampi.sources import Frame
from streampi.sources.convert import from_rgb
from streampi.sources.motion import MOTION_FORMATS, MotionGate, _Grid
from streampi.sources.scene import MotionScene, Movement

_motion = pytest.importorskip("streampi._ext._motion")

# --- the compiled pass against its NumPy twin ------------------------------------------------------


def twin_pass(plane, mode, offsets, xs, ys, sx, sy, background, threshold, alpha, follow_light, init):
    """What motion_pass computes, written from its docstring in NumPy: (changed, cells, background)."""
    plane = np.asarray(plane)
    xs, ys = np.asarray(xs, np.int64), np.asarray(ys, np.int64)
    if mode == _motion.LUMA_PLANE:
        luma = plane[np.ix_(ys, xs)].astype(np.int64)
    else:
        r, g, b = (plane[np.ix_(ys, xs + o)].astype(np.int64) for o in offsets)
        luma = (r * 9798 + g * 19235 + b * 3735 + 16384) >> 15
    gh, gw = len(ys) // sy, len(xs) // sx
    cells = luma.reshape(gh, sy, gw, sx).sum(axis=(1, 3)).reshape(-1) << 8
    if init:
        return 0, cells, cells.copy()
    d = cells - np.asarray(background, np.int64)
    offset = 0
    if follow_light:
        total = int(d.sum())
        offset = (abs(total) // len(d)) * (1 if total >= 0 else -1)  # C division: towards zero
    changed = int((np.abs(d - offset) > threshold).sum())
    return changed, cells, background + ((d * alpha) >> 16)


def kernel(plane, mode, offsets, xs, ys, sx, sy, cells, background, threshold, alpha, follow_light, init):
    """motion_pass with the cells and the background as two arrays (updated in place)."""
    state = np.concatenate([cells, background]).astype(np.int32)
    changed = _motion.motion_pass(plane, mode, *offsets, np.concatenate([xs, ys]).astype(np.int32), len(xs), sx, sy,
                                  state, threshold, alpha, follow_light, init)
    cells[:], background[:] = state[: len(cells)], state[len(cells):]
    return changed


def random_case(rng):
    mode = int(rng.integers(2))
    bpp = 1 if mode == _motion.LUMA_PLANE else int(rng.choice([3, 4]))
    h, w = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    pad = int(rng.integers(0, 9))  # row stride beyond the row: a view into a wider buffer
    big = rng.integers(0, 256, (h, w * bpp + pad), np.uint8)
    plane = big[:, : w * bpp]
    sx, sy = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    gw, gh = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    xs = (rng.integers(0, w, gw * sx) * bpp).astype(np.int32)  # any order, repeats allowed
    ys = rng.integers(0, h, gh * sy).astype(np.int32)
    offsets = tuple(int(v) for v in rng.permutation(3)) if bpp > 1 else (0, 0, 0)
    background = (rng.integers(0, 256 * sx * sy, gw * gh) << 8).astype(np.int32)
    threshold = int(rng.integers(0, 256 * 256 * sx * sy // 4))
    alpha = int(rng.choice([0, 1, 6554, 13107, 65535, 65536, int(rng.integers(65537))]))
    return (plane, mode, offsets, xs, ys, sx, sy, background, threshold, alpha, bool(rng.integers(2)),
            bool(rng.integers(2)))


@pytest.mark.aarch64
def test_compiled_pass_matches_its_numpy_twin():
    rng = np.random.default_rng(23)
    for case in range(400):
        plane, mode, offsets, xs, ys, sx, sy, background, threshold, alpha, follow, init = random_case(rng)
        want_changed, want_cells, want_bg = twin_pass(plane, mode, offsets, xs, ys, sx, sy, background.copy(),
                                                      threshold, alpha, follow, init)
        cells = np.full(len(background), -1, np.int32)
        bg = background.copy()
        if plane.shape[1] % 3 == 0 and mode == _motion.LUMA_RGB and case % 2:  # rows × pixels × 3, as RGB arrays are
            plane = plane.reshape(plane.shape[0], -1, 3)
        changed = kernel(plane, mode, offsets, xs, ys, sx, sy, cells, bg, threshold, alpha, follow, init)
        assert changed == want_changed, case
        assert np.array_equal(cells, want_cells), case
        assert np.array_equal(bg, want_bg), case


def test_compiled_pass_counts_changed_cells_exactly():
    """A plane of 2×2 cells, one sample each: the counts and the background follow by hand."""
    plane = np.array([[10, 20], [30, 40]], np.uint8)
    xs, ys = np.array([0, 1], np.int32), np.array([0, 1], np.int32)
    cells, bg = np.zeros(4, np.int32), np.zeros(4, np.int32)
    assert kernel(plane, _motion.LUMA_PLANE, (0, 0, 0), xs, ys, 1, 1, cells, bg, 0, 0, False, True) == 0
    assert cells.tolist() == bg.tolist() == [2560, 5120, 7680, 10240]
    plane2 = np.array([[10, 25], [30, 100]], np.uint8)  # cells 1 and 3 change by 5 and 60 levels
    n = kernel(plane2, _motion.LUMA_PLANE, (0, 0, 0), xs, ys, 1, 1, cells, bg, 10 * 256, 32768, False, False)
    assert n == 1  # only the change of 60 exceeds 10 levels
    assert bg.tolist() == [2560, 5120 + 640, 7680, 10240 + 7680]  # half-way (alpha 1/2)


@pytest.mark.parametrize("bad, message", [
    (dict(layout=np.array([0, 99, 0, 3], np.int32)), "outside the row"),
    (dict(layout=np.array([-1, 0, 0, 3], np.int32)), "outside the row"),
    (dict(layout=np.array([0, 3, 0, 4], np.int32)), "outside the plane"),
    (dict(layout=np.array([0, 3, 0], np.int32), sy=2), "whole cells"),
    (dict(nx=5), "whole cells"),
    (dict(nx=-1), "whole cells"),
    (dict(state=np.zeros(6, np.int32)), "must hold the cells and the background"),
    (dict(sx=0), "whole cells"),
    (dict(sy=0), "whole cells"),
    (dict(sx=3), "whole cells"),
    (dict(sy=3), "whole cells"),
    (dict(mode=7), "unknown luma mode"),
    (dict(mode=1, ro=-1), "channel offsets"),
    (dict(mode=1, bo=2), "outside the row"),  # RGB offsets reach past the last sampled pixel
    (dict(threshold=-1), "threshold"),
    (dict(alpha=65537), "alpha"),
    (dict(plane=np.zeros((4, 8), np.uint8)[:, ::2]), "contiguous"),
    (dict(plane=np.zeros((4, 4, 3), np.uint8)[:, ::2]), "contiguous"),
    (dict(plane=np.zeros((4, 4), np.uint8)[::-1]), "overlap"),
    (dict(plane=np.zeros((0, 4), np.uint8)), "empty"),
    (dict(plane=np.zeros((4, 4), np.uint16)), "bytes"),
    (dict(plane=np.zeros(16, np.uint8)), "2 or 3 dimensions"),
])
def test_compiled_pass_refuses_inconsistent_arguments(bad, message):
    args = dict(plane=np.zeros((4, 4), np.uint8), mode=0, ro=0, go=0, bo=0, layout=np.array([0, 3, 0, 3], np.int32),
                nx=2, sx=1, sy=1, state=np.zeros(8, np.int32), threshold=0, alpha=0, follow_light=False, init=False)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        _motion.motion_pass(*args.values())
    if "plane" in bad:
        args["plane"] = "not a buffer"
        with pytest.raises(TypeError):
            _motion.motion_pass(*args.values())


def test_grid_samples_fall_inside_their_cells():
    """Each sample's pixel overlaps its cell's span, on the frame and on a reduced plane (a JPEG
    decoded smaller, never below one pixel per sample), and the grid never has more samples than pixels."""
    for w, h, across, s in [(1280, 720, 64, 4), (320, 240, 64, 4), (17, 9, 64, 3), (1, 1, 64, 2), (640, 480, 5, 16)]:
        grid = _Grid(w, h, across, s)
        nx, ny = grid.gw * grid.sx, grid.gh * grid.sy
        assert 1 <= grid.gw <= w and 1 <= grid.gh <= h and nx <= w and ny <= h and grid.sy == 1
        assert grid.sx == min(s, w // grid.gw)
        assert abs(grid.gh / grid.gw - h / w) <= max(1 / grid.gw, 1 / h) + 1e-9 or grid.gh in (1, h)
        for plane_w, plane_h in [(w, h), (max(nx, w // 4), max(ny, h // 4)), (nx, ny)]:
            xs, ys = grid.positions(plane_w, plane_h, 3)
            assert len(xs) == nx and len(ys) == ny
            assert np.all(xs % 3 == 0)
            for pos, cells, size, per in ((xs // 3, grid.gw, plane_w, grid.sx), (ys, grid.gh, plane_h, grid.sy)):
                cell = np.arange(len(pos)) // per
                assert np.all((pos + 1) * cells > cell * size) and np.all(pos * cells < (cell + 1) * size)
                assert np.all(np.diff(pos) > 0)  # never the same pixel twice


# --- the gate on a camera view with ground truth ---------------------------------------------------

FPS = 5.0


@pytest.fixture(scope="module")
def scene_frames():
    """The default scene (120 s at 5 fps: 600 frames) as RGB and as I420 (converted once: the
    NumPy conversion is most of this module's time)."""
    scene = MotionScene(256, 144, fps=FPS, seed=0)
    rgb = [scene.frame(i)[0] for i in range(len(scene))]
    return scene, rgb, [from_rgb(frame, "i420") for frame in rgb]


def in_format(rgb, i420, fmt):
    if fmt == "i420":
        return i420
    if fmt == "nv12":  # the same planes, U and V interleaved
        h, w = rgb.shape[:2]
        u, v = i420[h:].reshape(2, h // 2, w // 2)
        return np.concatenate([i420[:h], np.stack([u, v], axis=-1).reshape(h // 2, w)])
    return from_rgb(rgb, fmt)


def decisions(scene_frames, fmt, **options):
    _, frames, i420 = scene_frames
    gate = MotionGate(**options)
    sent = [gate.check(Frame(in_format(rgb, yuv, fmt), fmt, f"frame {i}"), now=i / FPS)
            for i, (rgb, yuv) in enumerate(zip(frames, i420))]
    return np.array(sent), gate


def test_nv12_of_the_test_is_the_codebases_nv12(scene_frames):
    _, frames, i420 = scene_frames
    assert np.array_equal(in_format(frames[3], i420[3], "nv12"), from_rgb(frames[3], "nv12"))


def test_scene_ground_truth_has_idle_stretches_and_movements(scene_frames):
    scene, frames, _ = scene_frames
    assert len(scene.starts()) == 4
    assert all(scene.moving[s] for s in scene.starts())  # an object appearing is movement
    assert 50 < scene.moving.sum() < 150 and (~scene.moving).sum() > 400
    # idle frames still differ from each other: sensor noise and the light
    assert np.abs(frames[10].astype(int) - frames[11].astype(int)).mean() > 2
    assert abs(frames[0].mean() - frames[125].mean()) > 5  # the light drifts between idle frames


@pytest.mark.aarch64
def test_gate_skips_most_idle_frames_and_misses_no_first_second_of_movement(scene_frames):
    scene, frames, _ = scene_frames
    sent, gate = decisions(scene_frames, "i420")
    idle = ~scene.moving
    saved = 1 - sent[idle].mean()
    assert saved >= 0.8, f"only {saved:.1%} of idle frames skipped ({gate.counts})"
    first_second = [i for start in scene.starts() for i in range(start, start + int(FPS))]
    assert [i for i in first_second if not sent[i]] == []
    assert sum(gate.counts.values()) == len(frames)
    assert gate.counts["skipped"] == len(frames) - sent.sum()
    assert gate.counts["motion"] > 0 and gate.counts["hold"] > 0 and gate.counts["idle"] >= 120 / 10 / 2


@pytest.mark.aarch64
def test_every_format_gives_the_same_decisions(scene_frames):
    """The same picture in every format: the same decisions on every moving frame (all sent) and
    on 99 % of all frames. Luma rounds differently per format (a limited-range Y plane has 219
    levels, JPEG's DCT scaling averages), so where the count of changed cells sits right on
    ``area`` (the last frames of a background catching up after a movement) one frame can go
    either way, and the idle frames after it move by that frame."""
    scene, _, _ = scene_frames
    want, _ = decisions(scene_frames, "i420")
    for fmt in MOTION_FORMATS:
        got, gate = decisions(scene_frames, fmt)
        assert got[scene.moving].all(), fmt
        assert (got == want).mean() >= 0.99, (fmt, np.flatnonzero(got != want).tolist())
        assert 1 - got[~scene.moving].mean() >= 0.8, (fmt, gate.counts)


def test_jpeg_is_decoded_reduced_and_grey():
    """A 1280×720 JPEG is read at 1/4 scale (320×180 covers the 256×36 samples of the default grid)."""
    gate = MotionGate()
    rgb = MotionScene(1280, 720, seconds=1).frame(0)[0]
    plane, plan = gate._read(Frame(simplejpeg.encode_jpeg(rgb), "jpeg", "x"))
    assert plane.shape[:2] == (180, 320) and plan.geometry == ((1280, 720), False)


def test_a_stationary_gate_ignores_a_change_of_light_over_the_whole_picture():
    scene = MotionScene(160, 120, seconds=1, light=0.0)
    dim = scene.frame(0)[0]
    bright = np.clip(dim.astype(int) + 40, 0, 255).astype(np.uint8)  # the sun comes out
    for follow_light, want in ((True, "idle"), (False, "motion")):
        gate = MotionGate(follow_light=follow_light)
        gate.check(Frame(dim, "rgb", "dim"), now=0.0)
        gate.check(Frame(bright, "rgb", "bright"), now=20.0)
        assert gate.reason == want, follow_light


# --- timing: motion, hold, idle, skipped ----------------------------------------------------------


def still_and_moving(size=(96, 64)):
    """A still frame and one with a bright square in it (i420)."""
    w, h = size
    still = np.full((h, w, 3), 100, np.uint8)
    moved = still.copy()
    moved[10:40, 20:60] = 240
    return Frame(from_rgb(still, "i420"), "i420", "still"), Frame(from_rgb(moved, "i420"), "i420", "moved")


def run(gate, events):
    """events: (time, frame) pairs; returns the reasons."""
    out = []
    for now, frame in events:
        sent = gate.check(frame, now=now)
        assert sent == (gate.reason != "skipped")
        out.append(gate.reason)
    return out


def test_first_frame_is_sent_then_idle_every_period():
    still, _ = still_and_moving()
    gate = MotionGate(idle_every=10.0, hold=2.0)
    reasons = run(gate, [(t, still) for t in (0, 1, 5, 9.9, 10.0, 12, 19.9, 20.5, 21)])
    assert reasons == ["idle", "skipped", "skipped", "skipped", "idle", "skipped", "skipped", "idle", "skipped"]
    assert gate.counts == {"motion": 0, "hold": 0, "idle": 3, "skipped": 6}


def test_motion_is_sent_and_held_then_idle_resumes():
    still, moved = still_and_moving()
    gate = MotionGate(idle_every=10.0, hold=2.0, alpha=1.0)  # alpha 1: the background is the last frame
    reasons = run(gate, [(0, still), (3, still), (4, moved), (4.2, still), (5.5, still), (6.0, still),
                         (6.3, still), (15.9, still), (16.1, still)])
    # the square appearing and leaving are both motion; then held for 2 s after the last motion at 4.2
    assert reasons == ["idle", "skipped", "motion", "motion", "hold", "hold", "skipped", "skipped", "idle"]


def test_idle_every_none_sends_only_the_first_frame_and_motion():
    still, moved = still_and_moving()
    gate = MotionGate(idle_every=None, hold=0.0, alpha=1.0)
    reasons = run(gate, [(0, still), (100, still), (1000, moved), (1000.2, moved), (5000, still)])
    assert reasons == ["idle", "skipped", "motion", "skipped", "motion"]


def test_a_new_frame_size_or_reset_starts_a_new_background():
    still, moved = still_and_moving()
    other, _ = still_and_moving((64, 48))
    gate = MotionGate()
    assert run(gate, [(0, still), (1, still), (2, other), (3, other)]) == ["idle", "skipped", "idle", "skipped"]
    gate.reset()
    assert run(gate, [(4, moved), (5, moved)]) == ["idle", "skipped"]  # the square is the new background
    assert gate.counts == {"motion": 0, "hold": 0, "idle": 3, "skipped": 3}


def test_a_clock_that_goes_back_restarts_the_timers():
    still, _ = still_and_moving()
    gate = MotionGate(idle_every=10.0)
    assert run(gate, [(100, still), (105, still), (50, still), (51, still)]) == ["idle", "skipped", "idle", "skipped"]


def test_now_defaults_to_the_monotonic_clock():
    still, _ = still_and_moving()
    gate = MotionGate(idle_every=3600.0)
    assert gate.check(still) is True and gate.check(still) is False


def test_strided_and_bytes_frames_read_like_contiguous_ones():
    scene = MotionScene(96, 64, seconds=30)
    rgb0, rgb1 = scene.frame(0)[0], scene.frame(int(scene.script[0].start * scene.fps) + 3)[0]

    def padded(rgb):  # a view with row padding (a camera buffer's stride)
        wide = np.zeros((64, 120, 3), np.uint8)
        wide[:, :96] = rgb
        return wide[:, :96]

    every_other = np.repeat(rgb1, 2, axis=1)[:, ::2]  # pixel stride 6: read through a copy
    for first, second in ((padded(rgb0), padded(rgb1)), (rgb0, every_other)):
        a, b = MotionGate(), MotionGate()
        a.check(Frame(rgb0, "rgb", "x"), now=0)
        b.check(Frame(first, "rgb", "x"), now=0)
        a.check(Frame(rgb1, "rgb", "x"), now=1)
        b.check(Frame(second, "rgb", "x"), now=1)
        assert (a.reason, a.changed) == (b.reason, b.changed) and a.changed > 0
    c = MotionGate()
    c.check(Frame(from_rgb(rgb0, "i420").tobytes(), "i420", "x", width=96, height=64), now=0)
    c.check(Frame(bytearray(from_rgb(rgb1, "i420").tobytes()), "i420", "x", width=96, height=64), now=1)
    d = MotionGate()
    d.check(Frame(from_rgb(rgb0, "i420"), "i420", "x"), now=0)
    d.check(Frame(from_rgb(rgb1, "i420"), "i420", "x"), now=1)
    assert (c.reason, c.changed) == (d.reason, d.changed) == ("motion", d.changed) and d.changed > 0


def test_gray_frames_of_one_channel_and_two_gates_on_two_threads():
    """A gray frame as (h, w, 1) reads like (h, w); gates on two threads (the pass releases the
    GIL) decide as they do one after the other."""
    import threading

    scene = MotionScene(96, 64, seconds=30)
    frames = [scene.frame(i)[0] for i in range(0, len(scene), 3)]
    grays = [from_rgb(rgb, "gray") for rgb in frames]

    def run_gate(fmt, arrays, out):
        gate = MotionGate()
        out.extend(gate.check(Frame(a, fmt, "x"), now=i * 0.6) for i, a in enumerate(arrays))

    alone, shaped, first, second = [], [], [], []
    run_gate("gray", grays, alone)
    run_gate("gray", [g[..., None] for g in grays], shaped)
    threads = [threading.Thread(target=run_gate, args=("gray", grays, first)),
               threading.Thread(target=run_gate, args=("rgb", frames, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert shaped == alone == first and any(alone) and not all(alone)
    rgb_alone = []
    run_gate("rgb", frames, rgb_alone)
    assert second == rgb_alone


# --- bad frames and options -------------------------------------------------------------------------


@pytest.mark.parametrize("frame, message", [
    (Frame(np.zeros((48, 64), np.uint16), "i420", "x"), "must be uint8"),
    (Frame(np.zeros((47, 64), np.uint8), "i420", "x"), "height × 3/2"),
    (Frame(np.zeros((48, 63), np.uint8), "nv12", "x"), "even width"),
    (Frame(np.zeros((32, 64, 3), np.uint8), "i420", "x"), "2-D array"),
    (Frame(np.zeros((32, 64), np.uint8), "rgb", "x"), "height × width × 3"),
    (Frame(np.zeros((32, 64, 3), np.uint8), "bgra", "x"), "height × width × 4"),
    (Frame(np.zeros((0, 64), np.uint8), "gray", "x"), "must not be empty"),
    (Frame(np.zeros((4, 4, 3), np.float32), "rgb", "x"), "must be uint8"),
    (Frame([[1, 2], [3, 4]], "gray", "x", width=2, height=2), "NumPy array or bytes"),
    (Frame(b"\x00" * 10, "i420", "x", width=4, height=4), "needs 24 bytes, got 10"),
    (Frame(b"\x00" * 24, "i420", "x", width=None, height=None), "width must be an integer"),
    (Frame(b"not a jpeg at all", "jpeg", "x"), "header does not parse"),
    (Frame(np.zeros((8, 8), np.uint8), "yuyv", "x", width=8, height=8), "reads i420, nv12"),
])
def test_bad_frames_are_refused_clearly_and_leave_the_gate_as_it_was(frame, message):
    still, moved = still_and_moving()
    gate = MotionGate()
    gate.check(still, now=0.0)
    before = (dict(gate.counts), gate.reason, gate._state.copy())
    with pytest.raises(FrameError, match=message):
        gate.check(frame, now=1.0)
    assert (gate.counts, gate.reason) == before[:2] and np.array_equal(gate._state, before[2])
    assert gate.check(moved, now=2.0) and gate.reason == "motion"  # the gate still works


def test_a_truncated_jpeg_is_refused():
    rgb = MotionScene(320, 240, seconds=1).frame(0)[0]
    data = simplejpeg.encode_jpeg(rgb)
    simplejpeg.decode_jpeg_header(data[: len(data) * 3 // 4])  # the header is whole
    with pytest.raises(FrameError, match="does not decode"):
        MotionGate().check(Frame(data[: len(data) * 3 // 4], "jpeg", "x"), now=0.0)


def test_check_refuses_what_is_not_a_frame_and_bad_times():
    gate = MotionGate()
    with pytest.raises(FrameError, match="takes a Frame"):
        gate.check(np.zeros((4, 4), np.uint8))
    still, _ = still_and_moving()
    for now in (math.nan, math.inf, "1", True):
        with pytest.raises(ValueError, match="now must be a finite number"):
            gate.check(still, now=now)
    assert gate.counts == {"motion": 0, "hold": 0, "idle": 0, "skipped": 0}


@pytest.mark.parametrize("options, message", [
    (dict(idle_every=0), "idle_every must be > 0"),
    (dict(idle_every=-1.0), "idle_every must be > 0"),
    (dict(idle_every="10"), "idle_every must be a number"),
    (dict(hold=-0.5), "hold must be >= 0"),
    (dict(hold=math.nan), "hold must be a number"),
    (dict(threshold=300), "threshold must be >= 0 and <= 255"),
    (dict(area=1.5), "area must be >= 0 and <= 1"),
    (dict(alpha=0), "alpha must be > 0"),
    (dict(alpha=True), "alpha must be a number"),
    (dict(width=0), "width must be a whole number from 1 to 1024"),
    (dict(width=8.0), "width must be a whole number"),
    (dict(samples=17), "samples must be a whole number from 1 to 16"),
    (dict(follow_light="yes"), "follow_light must be True or False"),
])
def test_bad_options_are_refused_clearly(options, message):
    with pytest.raises(ValueError, match=message):
        MotionGate(**options)


def test_scene_refuses_bad_arguments():
    with pytest.raises(ValueError, match="at least 16×16"):
        MotionScene(8, 8)
    with pytest.raises(IndexError, match="outside"):
        MotionScene(32, 32, seconds=1).frame(5)
    scene = MotionScene(32, 32, seconds=2, script=(Movement(0.4, 0.4, 0.5, 0.5, 0.0, 0.0, stays=True),))
    assert scene.moving.tolist() == [False, False, True, False, False, False, False, False, False, False]
