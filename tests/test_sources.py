"""streampi.sources: synthetic frames in every wire format, folders read as stored, videos decoded
by PyAV into I420, sample(n) spread over the whole source, clear errors, and no kernels needed.
(Cameras and H.264: tests/test_cameras.py.)"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import numpy as np
import pytest
import simplejpeg

from streampi import ShapesGenerator
from streampi.errors import StreampiError
from streampi.formats import FORMATS, check_raw_size
from streampi.sources import (
    IMAGE_SUFFIXES,
    Frame,
    SourceError,
    open_source,
    rgb_to_gray,
    rgb_to_i420,
    rgb_to_nv12,
)

cv2 = pytest.importorskip("cv2")
pytest.importorskip("av", reason="video files are read by PyAV: pip install 'streampi[cameras]'")


def origins(frames) -> list[str]:
    return [f.origin for f in frames]


def index_of(origin: str) -> int:
    return int(origin.rsplit(" ", 1)[1])


@pytest.fixture
def folder(tmp_path):
    """12 images (8 JPEGs written by simplejpeg, 4 PNGs by OpenCV) and a file that is no image;
    returns (folder, the RGB of each image in name order)."""
    shapes = ShapesGenerator(seed=3)
    rgbs = []
    for i in range(12):
        rgb, _ = shapes.frame(64 + 2 * i, 48)
        rgbs.append(rgb)
        if i % 3:
            (tmp_path / f"{i:02d}.jpg").write_bytes(simplejpeg.encode_jpeg(rgb, quality=90))
        else:
            cv2.imwrite(str(tmp_path / f"{i:02d}.png"), rgb[..., ::-1])
    (tmp_path / "notes.txt").write_text("not an image, ignored by its suffix")
    return tmp_path, rgbs


@pytest.fixture
def video(tmp_path):
    """A 30-frame 160×120 MJPEG AVI written by OpenCV; returns (path, the RGB of each frame)."""
    path = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    shapes = ShapesGenerator(seed=8)
    rgbs = [shapes.frame(160, 120)[0] for _ in range(30)]
    for rgb in rgbs:
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()
    return path, rgbs


def nearest(i420: np.ndarray, rgbs: list[np.ndarray]) -> int:
    """Index of the written frame a decoded one is closest to (MJPEG is lossy)."""
    return int(np.argmin([np.abs(i420.astype(int) - rgb_to_i420(rgb)).mean() for rgb in rgbs]))


# -- synthetic ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_synthetic_frames_in_every_format(fmt):
    before = time.time()
    with open_source("synthetic", size=(96, 64), fmt=fmt, seed=5) as source:
        frames = list(itertools.islice(source, 3))
    truth = ShapesGenerator(seed=5)
    for i, f in enumerate(frames):
        assert f.fmt == fmt and (f.width, f.height) == (96, 64)
        assert f.origin == f"synthetic frame {i}" and f.label == truth.frame(96, 64)[1]
        assert before <= f.captured <= time.time()
        if fmt == "jpeg":
            assert simplejpeg.decode_jpeg_header(f.data)[:2] == (64, 96)
        else:
            assert check_raw_size(fmt, 96, 64, f.data.nbytes) == f.data.nbytes and f.data.flags.c_contiguous


def test_synthetic_frames_repeat_from_their_seed():
    with open_source("synthetic", size=(64, 48), seed=9) as source:
        first, again = list(itertools.islice(source, 4)), list(source.sample(4))
    assert [f.label for f in first] == [f.label for f in again]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(first, again))
    bgr = next(iter(open_source("synthetic", size=(64, 48), fmt="bgr", seed=9)))
    assert np.array_equal(bgr.data, first[0].data[..., ::-1])


# -- conversions, checked against OpenCV ------------------------------------------------------------------
@pytest.fixture
def blocky():
    """Random RGB, constant over each 2×2 block: chroma subsampling (OpenCV picks a pixel, we
    average the block) gives the same value either way, so only the colour matrix is compared."""
    return np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8).repeat(2, 0).repeat(2, 1)


def test_i420_matches_opencv_within_one_level(blocky):
    mine = rgb_to_i420(blocky).astype(int)
    theirs = cv2.cvtColor(blocky, cv2.COLOR_RGB2YUV_I420).astype(int)
    assert mine.shape == theirs.shape == (180, 160)
    assert np.abs(mine - theirs).max() <= 1


def test_nv12_holds_the_same_samples_interleaved(blocky):
    nv12, i420 = rgb_to_nv12(blocky), rgb_to_i420(blocky)
    decoded = cv2.cvtColor(nv12, cv2.COLOR_YUV2RGB_NV12)
    assert np.array_equal(decoded, cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420))
    assert np.abs(decoded.astype(int) - blocky).max() <= 2  # limited range rounds twice


def test_gray_matches_opencv_within_one_level(blocky):
    assert np.abs(rgb_to_gray(blocky).astype(int) - cv2.cvtColor(blocky, cv2.COLOR_RGB2GRAY)).max() <= 1


def test_yuv_needs_even_sizes():
    with pytest.raises(StreampiError, match="even width and height"):
        rgb_to_i420(np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(SourceError, match="even width and height"):
        open_source("synthetic", size=(63, 48), fmt="nv12")


# -- a folder of images ---------------------------------------------------------------------------------
def test_a_folder_in_name_order_jpeg_untouched_png_decoded(folder):
    path, rgbs = folder
    with open_source(path) as source:
        frames = list(source)
    assert origins(frames) == [str(path / f"{i:02d}.{'jpg' if i % 3 else 'png'}") for i in range(12)]
    for i, f in enumerate(frames):
        assert (f.width, f.height) == (64 + 2 * i, 48) and f.label is None
        if i % 3:
            assert f.fmt == "jpeg" and f.data == (path / f"{i:02d}.jpg").read_bytes()
        else:
            assert f.fmt == "bgr" and np.array_equal(f.data, rgbs[i][..., ::-1])  # PNG is lossless


def test_one_image_file_is_a_source(folder):
    path, _ = folder
    assert origins(open_source(path / "03.png")) == [str(path / "03.png")]


def test_loop_cycles_a_folder(folder):
    path, _ = folder
    with open_source(path, loop=True) as source:
        frames = list(itertools.islice(source, 30))
    names = origins(frames)
    assert names[:12] == names[12:24] == origins(open_source(path)) and names[24:] == names[:6]


@pytest.mark.parametrize("n", [1, 2, 4, 5, 11, 12, 100])
def test_sample_spreads_over_the_folder(folder, n):
    path, _ = folder
    names = origins(open_source(path).sample(n))
    everything = origins(open_source(path))
    picked = [everything.index(name) for name in names]
    assert len(picked) == min(n, 12) and picked == sorted(set(picked))
    if n >= 2:
        gaps = np.diff(picked)
        assert picked[0] == 0 and picked[-1] == 11 and gaps.max() - gaps.min() <= 1


# -- a video file ---------------------------------------------------------------------------------------
def test_a_video_frame_by_frame(video):
    path, rgbs = video
    with open_source(path) as source:
        frames = list(source)
    assert origins(frames) == [f"{path} frame {i}" for i in range(30)]
    # MJPEG's full-range yuvj420p, converted by libswscale into the limited-range I420 the kernels read
    assert all(f.fmt == "i420" and f.data.shape == (180, 160) and (f.width, f.height) == (160, 120)
               for f in frames)
    assert [f.pts for f in frames] == pytest.approx([i / 10 for i in range(30)])
    assert [nearest(f.data, rgbs) for f in frames] == list(range(30))


def test_sample_spreads_over_the_video(video):
    path, rgbs = video
    frames = list(open_source(path).sample(7))
    picked = [index_of(f.origin) for f in frames]
    gaps = np.diff(picked)
    assert len(picked) == 7 and picked[0] == 0 and picked[-1] == 29 and gaps.max() - gaps.min() <= 1
    assert [nearest(f.data, rgbs) for f in frames] == picked  # each is the frame its origin names


def test_loop_cycles_a_video_and_close_ends_it(video):
    path, _ = video
    source = open_source(path, loop=True)
    frames = iter(source)
    picked = [index_of(f.origin) for f in itertools.islice(frames, 70)]
    assert picked == list(range(30)) * 2 + list(range(10))
    source.close()
    assert next(frames, None) is None  # the pass is over, its capture released
    with pytest.raises(SourceError, match="closed"):
        iter(source)


# -- errors -----------------------------------------------------------------------------------------------
def test_clear_errors(tmp_path, video):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (lambda: open_source(tmp_path / "nowhere"), "neither 'synthetic'.*no such file"),
        (lambda: open_source(empty), "no images in .*empty.*" + ", ".join(IMAGE_SUFFIXES)),
        (lambda: open_source("synthetic", fmt="yuyv"), "unknown frame format 'yuyv'"),
        (lambda: open_source("synthetic", size=(0, 10)), "size must be"),
        (lambda: open_source("synthetic").sample(0), r"sample\(n\).*>= 1, got 0"),
        (lambda: open_source(video[0]).sample(-3), r"sample\(n\).*got -3"),
    ]
    for call, message in cases:
        with pytest.raises(SourceError, match=message):
            call()


def test_a_corrupt_image_is_named(tmp_path):
    (tmp_path / "a.jpg").write_bytes(simplejpeg.encode_jpeg(ShapesGenerator(seed=1).frame(32, 32)[0]))
    (tmp_path / "b.png").write_bytes(b"plain text pretending to be a PNG")
    frames = iter(open_source(tmp_path))
    assert next(frames).fmt == "jpeg"
    with pytest.raises(SourceError, match=r"image .*b\.png cannot be decoded"):
        next(frames)
    garbled = Frame(b"\xff\xd8 a broken JPEG", "jpeg", "x.jpg")  # passed on: the server says why
    assert (garbled.width, garbled.height) == (None, None)


def test_videos_that_cannot_be_read(tmp_path):
    text = tmp_path / "clip.mp4"
    text.write_text("not a video")
    with pytest.raises(SourceError, match="clip.mp4 is not a video PyAV can open .*Invalid data"):
        open_source(text)
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120)).release()
    with pytest.raises(SourceError, match="empty.avi"):
        open_source(empty)


# -- the light client ---------------------------------------------------------------------------------------
CAMERA = r"""
import sys

class Refuse:
    "An import hook: these packages are not installed on this camera."
    BLOCKED = ("streampi._ext", "ai_edge_litert", "tflite_runtime", "tensorflow", "cv2", "av")
    def find_spec(self, name, path=None, target=None):
        if name.startswith(self.BLOCKED):
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, Refuse())
import itertools
from streampi.errors import SourceError
from streampi.formats import FORMATS
from streampi.sources import open_source

for fmt in FORMATS:
    frame = next(iter(open_source("synthetic", size=(64, 48), fmt=fmt)))
    assert frame.fmt == fmt and frame.width == 64, frame
print("jpeg files:", len(list(open_source(sys.argv[1]))))
try:
    open_source(sys.argv[2])
except SourceError as exc:
    print("video:", exc)
loaded = sorted(m for m in sys.modules if m.startswith(Refuse.BLOCKED))
print("loaded:", loaded)
"""


def test_sources_need_no_kernels_nor_an_interpreter_nor_opencv_nor_pyav(tmp_path, video):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(simplejpeg.encode_jpeg(ShapesGenerator(seed=i).frame(32, 32)[0]))
    out = subprocess.run([sys.executable, "-c", CAMERA, str(tmp_path), str(video[0])], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "jpeg files: 3" in out.stdout
    assert "video: RTSP cameras and video files need PyAV: pip install 'streampi[cameras]'" in out.stdout
    assert "loaded: []" in out.stdout
