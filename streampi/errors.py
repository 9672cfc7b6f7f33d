"""streampi's exception hierarchy.

Callers can tell bad input (:class:`FrameError`, :class:`ProtocolError`, subclasses of
``ValueError``) apart from a model or set-up problem (:class:`ModelError`,
:class:`BackendUnavailable`) and from a bug (anything else). Every error carries a short
machine-readable ``code`` that the server puts into error results.
"""

from __future__ import annotations


class StreampiError(Exception):
    """Base class of every error streampi raises on purpose."""

    code = "internal"


class BackendUnavailable(StreampiError, ImportError):
    """No TFLite interpreter package is installed (or the one asked for is missing)."""

    code = "backend_unavailable"


class ModelError(StreampiError):
    """A model file cannot be loaded or served."""

    code = "model_error"


class ModelFileError(ModelError, ValueError):
    """The path is missing, is not a file, or is not a TFLite flatbuffer."""


class UnsupportedOpError(ModelError):
    """The model uses an op (typically a custom op) that the backend cannot resolve."""

    def __init__(self, message: str, op: str | None = None) -> None:
        super().__init__(message)
        self.op = op


class UnsupportedModelError(ModelError, ValueError):
    """The model's inputs are of a kind streampi's kernels cannot produce."""


class FrameError(StreampiError, ValueError):
    """A frame's pixels, size or format are invalid."""

    code = "bad_frame"


class ProtocolError(FrameError):
    """A wire message does not follow the protocol (see docs/protocol.md)."""


class SourceError(StreampiError):
    """A frame source (``synthetic``, a folder, a video file, a camera) cannot be opened or read."""

    code = "source"


class AuthError(StreampiError):
    """A CurveZMQ key is missing or unreadable, or a handshake with the server failed."""

    code = "auth"
