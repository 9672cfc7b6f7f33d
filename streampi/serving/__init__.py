"""The server side: the asyncio driver, the pure scheduler and peer table, and the supervised workers.

The names below load on first use (as in :mod:`streampi`): ``import streampi.serving.options``
or ``streampi.serving.launch`` loads neither an interpreter nor the compiled kernels.

Modules: :mod:`.server` (the driver), :mod:`.options` (``ServerOptions``), :mod:`.scheduler`
and :mod:`.peers` (sans-IO cores), :mod:`.workers` (workers and their runners), :mod:`.runner`
(a runner process's main), :mod:`.control` (``streampi ctl`` and health), :mod:`.launch`
(``streampi serve`` in a child process), :mod:`.metrics`, :mod:`.systemd`.
"""

from .. import lazy_names

#: name -> module that defines it, imported when the name is first used
_LAZY = {
    "Job": "scheduler", "Scheduler": "scheduler",
    "Server": "server", "ServerFailure": "server",
    "ServerOptions": "options",
    "Outcome": "workers", "WorkerSlot": "workers", "WorkerSpec": "workers",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_names(__name__, _LAZY)
