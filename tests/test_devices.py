"""Cameras on the machine (streampi.sources.devices): the buffer conversions of both adapters
against independent references (FFmpeg's own YUYV → yuv420p, OpenCV's YUYV luma, the I420 a
padded libcamera buffer was made from, libjpeg-turbo decoding a frame stripped of its tables),
the V4L2 adapter's packet path on recorded streams read through PyAV, clear errors, and the
devices themselves where one exists (skipped with the reason elsewhere)."""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import simplejpeg

from streampi.errors import SourceError
from streampi.sources import Frame
from streampi.sources.convert import rgb_to_i420
from streampi.sources.devices import (
    PiCamera,
    V4L2Camera,
    open_device,
    yuv420_to_i420,
    yuyv_to_i420,
)
from streampi.sources.scene import MotionScene

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")
HAVE_AV = importlib.util.find_spec("av") is not None
needs_av = pytest.mark.skipif(not HAVE_AV, reason="PyAV is not installed (pip install 'streampi[cameras]')")


def ffmpeg_convert(data: bytes, size: tuple[int, int], src: str, dst: str) -> bytes:
    w, h = size
    return subprocess.run([FFMPEG, "-v", "error", "-f", "rawvideo", "-pix_fmt", src, "-s", f"{w}x{h}", "-i", "-",
                           "-f", "rawvideo", "-pix_fmt", dst, "-"], input=data, capture_output=True, check=True,
                          timeout=60).stdout


def yuyv_frame(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A YUYV frame with every byte value: random rows (noise is the hard case for averaging)."""
    return np.random.default_rng(seed).integers(0, 256, (h, 2 * w), np.uint8)


# --- YUYV → I420 ------------------------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("size", [(16, 2), (64, 48), (320, 240), (640, 480), (176, 144)])
def test_yuyv_to_i420_is_ffmpegs_conversion(size):
    w, h = size
    yuyv = yuyv_frame(w, h)
    want = np.frombuffer(ffmpeg_convert(yuyv.tobytes(), size, "yuyv422", "yuv420p"), np.uint8).reshape(h * 3 // 2, w)
    assert np.array_equal(yuyv_to_i420(yuyv, w, h), want)


@needs_ffmpeg
def test_yuyv_to_i420_within_one_level_of_ffmpeg_at_odd_widths():
    """swscale's YUYV path rounds its last pixels (beyond a multiple of 16) down, not up."""
    w, h = 34, 6
    yuyv = yuyv_frame(w, h, seed=3)
    want = np.frombuffer(ffmpeg_convert(yuyv.tobytes(), (w, h), "yuyv422", "yuv420p"), np.uint8).reshape(h * 3 // 2, w)
    got = yuyv_to_i420(yuyv, w, h)
    assert np.array_equal(got[:h], want[:h]) and np.abs(got.astype(int) - want).max() <= 1


def test_yuyv_luma_is_opencvs():
    cv2 = pytest.importorskip("cv2")
    w, h = 96, 64
    yuyv = yuyv_frame(w, h, seed=1)
    assert np.array_equal(yuyv_to_i420(yuyv, w, h)[:h], cv2.cvtColor(yuyv.reshape(h, w, 2), cv2.COLOR_YUV2GRAY_YUYV))


def test_yuyv_to_i420_reads_padded_rows_and_bytes():
    w, h, stride = 64, 48, 160  # rows of 128 bytes, 32 bytes of padding each
    yuyv = yuyv_frame(w, h, seed=2)
    padded = np.full((h, stride), 0xEE, np.uint8)
    padded[:, : 2 * w] = yuyv
    want = yuyv_to_i420(yuyv, w, h)
    assert np.array_equal(yuyv_to_i420(padded, w, h, stride), want)
    assert np.array_equal(yuyv_to_i420(padded.tobytes()[: stride * (h - 1) + 2 * w], w, h, stride), want)
    assert np.array_equal(yuyv_to_i420(bytearray(yuyv.tobytes()), w, h), want)


# --- picamera2's YUV420 (libcamera layout, padded rows) → I420 ---------------------------------------


def libcamera_yuv420(i420: np.ndarray, stride: int) -> np.ndarray:
    """The buffer libcamera hands picamera2 for a YUV420 stream: Y rows ``stride`` bytes apart,
    then U and V with rows ``stride / 2`` apart, padding filled with junk; shaped as
    ``Request.make_array`` shapes it, ``(height * 3/2, stride)``."""
    h, w = i420.shape[0] * 2 // 3, i420.shape[1]
    buf = np.full(stride * h * 3 // 2, 0xA5, np.uint8)
    buf[: stride * h].reshape(h, stride)[:, :w] = i420[:h]
    q = (h // 2) * (w // 2)
    chroma = i420[h:].reshape(-1)
    cs = stride // 2
    for plane in range(2):
        start = stride * h + plane * cs * (h // 2)
        buf[start:start + cs * (h // 2)].reshape(h // 2, cs)[:, : w // 2] = \
            chroma[plane * q:(plane + 1) * q].reshape(h // 2, w // 2)
    return buf.reshape(h * 3 // 2, stride)


@pytest.mark.aarch64
@pytest.mark.parametrize("size, stride", [((320, 240), 320), ((320, 240), 384), ((224, 224), 256), ((62, 46), 64),
                                          ((640, 360), 640), ((2, 2), 64)])
def test_yuv420_buffer_to_i420_drops_the_padding(size, stride):
    w, h = size
    rgb = MotionScene(max(w, 16), max(h, 16), seconds=1).frame(0)[0][:h, :w]
    i420 = rgb_to_i420(np.ascontiguousarray(rgb))
    buf = libcamera_yuv420(i420, stride)
    assert np.array_equal(yuv420_to_i420(buf, w, h, stride), i420)
    assert np.array_equal(yuv420_to_i420(buf.tobytes(), w, h, stride), i420)  # make_buffer's flat bytes


def test_yuv420_buffer_gives_opencvs_picture():
    """The converted frame is the same picture to OpenCV as the I420 it came from (the padding never
    shows up as a stripe at the right edge)."""
    cv2 = pytest.importorskip("cv2")
    rgb = MotionScene(320, 240, seconds=1).frame(0)[0]
    i420 = rgb_to_i420(rgb)
    got = yuv420_to_i420(libcamera_yuv420(i420, 384), 320, 240, 384)
    assert np.array_equal(cv2.cvtColor(got, cv2.COLOR_YUV2RGB_I420), cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420))


@pytest.mark.parametrize("call, message", [
    (lambda: yuv420_to_i420(np.zeros(90, np.uint8), 8, 8, 8), "holds 90 bytes, the frame needs 96"),
    (lambda: yuv420_to_i420(np.zeros(1000, np.uint8), 8, 8, 6), "shorter than the row"),
    (lambda: yuv420_to_i420(np.zeros(1000, np.uint8), 8, 8, 9), "must be even"),
    (lambda: yuv420_to_i420(np.zeros(1000, np.uint8), 7, 8, 8), "even width and height"),
    (lambda: yuv420_to_i420(np.zeros(1000, np.uint16), 8, 8, 8), "uint8"),
    (lambda: yuv420_to_i420("not bytes", 8, 8, 8), "not a buffer"),
    (lambda: yuyv_to_i420(b"\x00" * 10, 4, 4), "holds 10 bytes"),
    (lambda: yuyv_to_i420(b"\x00" * 100, 4, 4, 6), "shorter than the row"),
    (lambda: yuyv_to_i420(b"\x00" * 100, 0, 4), "width must be a whole number"),
    (lambda: yuyv_to_i420(b"\x00" * 100, 4, 4.0), "height must be a whole number"),
])
def test_bad_buffers_are_refused_clearly(call, message):
    with pytest.raises(SourceError, match=message):
        call()


# --- Motion-JPEG without Huffman tables --------------------------------------------------------------


def strip_huffman_tables(jpeg: bytes) -> bytes:
    """What many USB cameras send: the JPEG without its DHT segments (the standard tables implied)."""
    out, i = bytearray(jpeg[:2]), 2
    while True:
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2:i + 4], "big")
        if marker == 0xDA:
            return bytes(out) + jpeg[i:]
        if marker != 0xC4:
            out += jpeg[i:i + 2 + length]
        i += 2 + length


def test_mjpeg_frames_without_tables_reach_the_model_like_whole_jpegs():
    """Why the adapter passes MJPEG through untouched: the server's decoder (libjpeg-turbo) reads
    a frame without Huffman tables with the standard ones, the same pixels into the same input."""
    from streampi.preprocess import Preprocessor

    rgb = MotionScene(320, 240, seconds=1).frame(0)[0]
    jpeg = simplejpeg.encode_jpeg(rgb, quality=85)  # libjpeg-turbo encodes with the standard tables
    bare = strip_huffman_tables(jpeg)
    assert b"\xff\xc4" in jpeg and b"\xff\xc4" not in bare[: bare.index(b"\xff\xda")]
    assert np.array_equal(simplejpeg.decode_jpeg(bare), simplejpeg.decode_jpeg(jpeg))
    pre = Preprocessor((224, 224, 3), np.int8, scale=2 / 255, zero_point=-1)
    assert np.array_equal(pre(bare, "jpeg")[0], pre(jpeg, "jpeg")[0])


# --- the V4L2 adapter's packet path, on recorded streams -------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Five frames of FFmpeg's test pattern, 160×120, as a camera sends them: raw YUYV and
    Motion-JPEG, written by ffmpeg."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    d = tmp_path_factory.mktemp("v4l2")
    src = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=5", "-frames:v", "5"]
    for name, args in (("frames.yuyv", ["-pix_fmt", "yuyv422", "-f", "rawvideo"]),
                       ("frames.mjpeg", ["-pix_fmt", "yuvj422p", "-f", "mjpeg"])):
        subprocess.run([FFMPEG, "-v", "error", *src, *args, str(d / name)], check=True, timeout=60)
    return d


@needs_av
def test_v4l2_adapter_turns_yuyv_packets_into_i420(recorded):
    d = recorded
    yuyv = np.frombuffer((d / "frames.yuyv").read_bytes(), np.uint8).reshape(5, 120, 320)
    cam = V4L2Camera(str(d / "frames.yuyv"), (160, 120), "i420", demuxer="rawvideo",
                     options={"video_size": "160x120", "pixel_format": "yuyv422"})
    with cam:
        frames = list(itertools.islice(cam, 10))
    assert len(frames) == 5 and cam.live
    for i, frame in enumerate(frames):
        assert (frame.fmt, frame.width, frame.height, frame.data.shape) == ("i420", 160, 120, (180, 160))
        want = np.frombuffer(ffmpeg_convert(yuyv[i].tobytes(), (160, 120), "yuyv422", "yuv420p"), np.uint8)
        assert np.array_equal(frame.data.reshape(-1), want), i
        assert frame.origin.endswith(f"frame {i}")


@needs_av
def test_v4l2_adapter_passes_mjpeg_packets_through(recorded):
    d = recorded
    data = (d / "frames.mjpeg").read_bytes()
    with V4L2Camera(str(d / "frames.mjpeg"), (160, 120), "jpeg", demuxer="mjpeg", options={}) as cam:
        frames = list(itertools.islice(cam, 10))
    assert len(frames) == 5
    assert b"".join(f.data for f in frames) == data  # whole JPEGs, byte for byte, nothing decoded
    assert all((f.fmt, f.width, f.height) == ("jpeg", 160, 120) for f in frames)


# --- errors ------------------------------------------------------------------------------------------


@needs_av
def test_a_missing_v4l2_device_says_so_with_ffmpegs_reason():
    with pytest.raises(SourceError, match=r"/dev/video99: the camera cannot be opened \(v4l2, video_size=320x240 "
                                          r"input_format=mjpeg\): .*No such file or directory"):
        open_device("/dev/video99", size=(320, 240))


@pytest.mark.parametrize("spec, kwargs, message", [
    ("/dev/video0", dict(fmt="rgb"), "give jpeg or i420 frames, not 'rgb'"),
    ("/dev/video0", dict(size=(641, 480)), "even width and height"),
    ("/dev/video0", dict(size=(0, 480)), "two whole numbers"),
    ("/dev/video0", dict(size="640x480"), "size must be"),
    ("picamera2:1", dict(fmt="jpeg"), "gives i420 frames"),
    ("picamera2:x", {}, "not a camera on this machine"),
    ("rtsp://camera/stream", {}, "not a camera on this machine"),
])
def test_bad_specs_and_options_are_refused_clearly(spec, kwargs, message):
    if spec.startswith("/dev/") and not HAVE_AV:
        pytest.skip("PyAV is not installed (pip install 'streampi[cameras]')")
    with pytest.raises(SourceError, match=message):
        open_device(spec, **kwargs)


def without(module: str, code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` where importing ``module`` fails, as on a machine without it."""
    script = (f"import sys\nclass Refuse:\n    def find_spec(self, name, path=None, target=None):\n"
              f"        if name == {module!r} or name.startswith({module + '.'!r}):\n"
              f"            raise ImportError('not installed')\n"
              f"sys.meta_path.insert(0, Refuse())\n{code}")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_without_pyav_a_usb_camera_says_what_to_install():
    out = without("av", "from streampi.sources.devices import open_device\nopen_device('/dev/video0')")
    assert out.returncode == 1
    assert "SourceError: USB cameras (/dev/videoN) need PyAV: pip install 'streampi[cameras]'" in out.stderr


def test_without_picamera2_the_pi_camera_says_what_to_install():
    out = without("picamera2", "from streampi.sources.devices import open_device\nopen_device('picamera2:0')")
    assert out.returncode == 1
    assert "sudo apt install python3-picamera2" in out.stderr and "--system-site-packages" in out.stderr


def test_importing_the_devices_module_loads_neither_pyav_nor_picamera2():
    out = subprocess.run([sys.executable, "-c", "import sys, streampi.sources.devices; "
                          "print(sorted(m for m in sys.modules if m in ('av', 'picamera2', 'libcamera')))"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# --- the devices themselves ---------------------------------------------------------------------------


def capture_devices() -> list[str]:
    """V4L2 nodes that capture video (metadata nodes of UVC cameras do not)."""
    found = []
    for path in sorted(glob.glob("/dev/video*")):
        name = os.path.basename(path)
        caps = f"/sys/class/video4linux/{name}/device/../video4linux"
        if os.access(path, os.R_OK) and os.path.exists(caps):
            found.append(path)
    return found


@needs_av
@pytest.mark.parametrize("fmt", ["jpeg", "i420"])
def test_a_usb_camera_gives_frames(fmt):
    devices = capture_devices()
    if not devices:
        pytest.skip("no V4L2 capture device (/dev/videoN) on this machine")
    try:
        cam = open_device(devices[0], size=(640, 480), fmt=fmt)
    except SourceError as exc:
        pytest.skip(f"{devices[0]} does not give {fmt} at 640×480: {exc}")
    with cam:
        frames = list(itertools.islice(cam, 3))
    assert len(frames) == 3
    for frame in frames:
        assert isinstance(frame, Frame) and frame.fmt == fmt and frame.width and frame.height
        if fmt == "jpeg":
            assert simplejpeg.decode_jpeg(frame.data).shape == (frame.height, frame.width, 3)
        else:
            assert frame.data.shape == (frame.height * 3 // 2, frame.width)


def test_the_pi_camera_gives_i420_frames():
    if importlib.util.find_spec("picamera2") is None:
        pytest.skip("picamera2 is not installed (a Raspberry Pi OS package: sudo apt install python3-picamera2)")
    try:
        cam = open_device("picamera2", size=(320, 240))
    except SourceError as exc:
        pytest.skip(f"no Pi camera answers: {exc}")
    assert isinstance(cam, PiCamera)
    with cam:
        frames = list(itertools.islice(cam, 3))
    assert [(f.fmt, f.width, f.height, f.data.shape) for f in frames] == [("i420", 320, 240, (360, 320))] * 3
