"""``synthetic``: procedural shapes with their ground-truth label, in any wire format (no
camera, no files: load tests, demos and calibration)."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Generator

from ..errors import SourceError
from ..synthetic import ShapesGenerator
from .base import Frame, Source
from .convert import from_rgb


class SyntheticSource(Source):
    """An endless sequence of :class:`~streampi.synthetic.ShapesGenerator` frames of ``size``
    (width, height) in ``fmt``; each pass (and :meth:`sample`) starts again from ``seed``, so
    a seed always gives the same frames (``seed=None``: different ones each pass)."""

    def __init__(self, size: tuple[int, int], fmt: str, seed: int | None, loop: bool = False) -> None:
        super().__init__("synthetic", loop)
        if (len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in size)):
            raise SourceError(f"synthetic frame size must be two whole numbers >= 1 (width, height), got {size!r}")
        if fmt in ("i420", "nv12") and (size[0] % 2 or size[1] % 2):
            raise SourceError(f"synthetic {fmt} frames need an even width and height, got {size[0]}×{size[1]}")
        self.width, self.height = int(size[0]), int(size[1])
        self.fmt, self.seed = fmt, seed

    def _frames(self) -> Generator[Frame, None, None]:
        shapes = ShapesGenerator(seed=self.seed)
        for i in itertools.count():  # endless: the caller takes what it needs
            rgb, label = shapes.frame(self.width, self.height)
            yield Frame(from_rgb(rgb, self.fmt), self.fmt, f"synthetic frame {i}", int(label),
                        width=self.width, height=self.height)
