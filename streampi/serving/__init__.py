"""The server side: the asyncio driver, the pure scheduler and peer table, and the supervised workers.

The names below load on first use (as in :mod:`streampi`): ``import streampi.serving.options``
or ``streampi.serving.launch`` loads neither an interpreter nor the compiled kernels.

Modules: :mod:`.server` (the driver), :mod:`.options` (``ServerOptions``), :mod:`.scheduler`
and :mod:`.peers` (sans-IO cores), :mod:`.workers` (workers and their runners), :mod:`.runner`
(a runner process's main), :mod:`.control` (``streampi ctl`` and health), :mod:`.launch`
(``streampi serve`` in a child process), :mod:`.metrics`, :mod:`.systemd`, :mod:`.config_file`.
"""

#: name -> module that defines it, imported when the name is first used
_LAZY = {
    "Job": "scheduler", "Scheduler": "scheduler",
    "Server": "server", "ServerFailure": "server",
    "ServerOptions": "options",
    "Outcome": "workers", "WorkerSlot": "workers", "WorkerSpec": "workers",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streampi.serving' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
