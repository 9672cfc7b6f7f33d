"""streampi: an edge-inference streaming server for the Raspberry Pi.

Camera producers push frames over ZeroMQ; the server preprocesses them with fused Cython
kernels straight into TFLite input tensors, runs micro-batches on pinned interpreter
workers and publishes results to subscribers. See README.md and docs/.
"""

from .config import ModelConfig, load_config
from .errors import (
    BackendUnavailable,
    FrameError,
    ModelError,
    ModelFileError,
    ProtocolError,
    StreampiError,
    UnsupportedModelError,
    UnsupportedOpError,
)
from .model import Model, bundled_model
from .preprocess import Preprocessor, Transform
from .synthetic import LABELS, ShapesGenerator

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "FrameError", "LABELS", "Model", "ModelConfig", "ModelError", "ModelFileError",
    "Preprocessor", "ProtocolError", "ShapesGenerator", "StreampiError", "Transform", "UnsupportedModelError",
    "UnsupportedOpError", "bundled_model", "load_config", "__version__",
]


def __getattr__(name: str):
    # the networking half imports pyzmq; load it only when asked for
    if name == "Server":
        from .serving import Server
        return Server
    if name in ("Producer", "Subscriber", "AsyncProducer", "AsyncSubscriber"):
        from . import client
        return getattr(client, name)
    raise AttributeError(f"module 'streampi' has no attribute {name!r}")
