"""streampi: an edge-inference streaming server for the Raspberry Pi.

Camera producers push frames over ZeroMQ; the server preprocesses them with fused Cython
kernels straight into TFLite input tensors, runs micro-batches on supervised interpreter
worker processes and publishes results to subscribers. See README.md and docs/.

The names below load on first use: a camera that only imports :mod:`streampi.client` needs
pyzmq, msgspec and NumPy, not the compiled kernels or an interpreter.
"""

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

#: name -> module that defines it, imported when the name is first used
_LAZY = {
    "ModelConfig": "config", "load_config": "config",
    "Model": "model", "bundled_model": "model",
    "Preprocessor": "preprocess", "Transform": "preprocess",
    "LABELS": "synthetic", "ShapesGenerator": "synthetic", "ScenesGenerator": "synthetic",
    "Server": "serving", "ServerOptions": "serving",
    "Producer": "client", "Subscriber": "client", "AsyncProducer": "client", "AsyncSubscriber": "client",
}

__all__ = [
    "BackendUnavailable", "FrameError", "ModelError", "ModelFileError", "ProtocolError", "StreampiError",
    "UnsupportedModelError", "UnsupportedOpError", "__version__", *_LAZY,
]


def version() -> str:
    """The installed package's version: its metadata (pyproject.toml) is the one place it is written."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as metadata_version

    try:
        return metadata_version("streampi")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def lazy_names(package: str, names: dict[str, str]):
    """A module ``__getattr__`` (PEP 562) that imports ``names[name]`` (a submodule of
    ``package``) the first time ``name`` is used, so that importing the package stays light."""
    import importlib
    import sys

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


_lazy = lazy_names(__name__, _LAZY)


def __getattr__(name: str):
    if name == "__version__":
        return version()
    return _lazy(name)
