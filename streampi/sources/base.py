"""The frame record every source yields, and what every source does (iterate, sample, close)."""

from __future__ import annotations

import time
import weakref
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SourceError


@dataclass(slots=True)
class Frame:
    """One frame as a producer sends it: ``data`` in wire format ``fmt`` (an array for raw
    formats, ``bytes`` for ``jpeg``), where it came from (``origin``, for messages), its
    ground-truth ``label`` when known (synthetic frames) and when it was read (``captured``,
    ``time.time()``; for a network camera, when its encoded data came in). ``width``/``height``
    are read from the array, or from a JPEG's header (``None`` when the header does not parse:
    the server will say why). Decoded video also says where the frame sits in its stream
    (``pts``, seconds) and when the decoder handed it out (``decoded``, ``time.time()``)."""

    data: Any
    fmt: str
    origin: str
    label: int | None = None
    width: int | None = None
    height: int | None = None
    captured: float = field(default_factory=time.time)
    pts: float | None = None
    decoded: float | None = None

    def __post_init__(self) -> None:
        if self.width is None and self.height is None:
            self.width, self.height = _size_of(self.data, self.fmt)


def _size_of(data: Any, fmt: str) -> tuple[int | None, int | None]:
    if fmt == "jpeg":
        import simplejpeg

        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except (ValueError, TypeError):
            return None, None
        return width, height
    shape = np.shape(data)
    if len(shape) < 2:
        return None, None
    return shape[1], shape[0] * 2 // 3 if fmt in ("i420", "nv12") else shape[0]


def spread(n_have: int, n_want: int) -> list[int]:
    """Up to ``n_want`` indices spread evenly over ``range(n_have)``, first and last included."""
    if n_have <= n_want:
        return list(range(n_have))
    return sorted({int(round(i)) for i in np.linspace(0, n_have - 1, n_want)})


class Source:
    """Frames from one place. Iterating starts a pass from the first frame (``loop=True``:
    passes repeat forever); :meth:`sample` reads up to ``n`` frames spread over the whole
    source, one at a time; :meth:`close` (or leaving a ``with`` block) ends every pass still
    open and releases what it holds. ``live`` sources (cameras) run at their own pace and never
    end; the others can be read as fast as the caller wants."""

    live = False

    def __init__(self, name: str, loop: bool = False) -> None:
        self.name = name
        self.loop = loop
        self._passes: weakref.WeakSet[Generator] = weakref.WeakSet()
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        return self._start(self._frames())

    def sample(self, n: int) -> Iterator[Frame]:
        """Up to ``n`` frames spread evenly over a folder or a video (the first ``n`` of an
        endless source), read one at a time: a long video never sits in memory."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SourceError(f"sample(n) takes a whole number of frames >= 1, got {n!r}")
        return self._start(self._sample(n))

    def close(self) -> None:
        self._closed = True
        for frames in list(self._passes):
            frames.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}{' loop' if self.loop else ''}>"

    def _start(self, frames: Generator[Frame, None, None]) -> Generator[Frame, None, None]:
        if self._closed:
            raise SourceError(f"source {self.name!r} is closed")
        self._passes.add(frames)
        return frames

    def _frames(self) -> Generator[Frame, None, None]:
        raise NotImplementedError

    def _sample(self, n: int) -> Generator[Frame, None, None]:
        frames = self._frames()
        try:
            for _, frame in zip(range(n), frames):
                yield frame
        finally:
            frames.close()
