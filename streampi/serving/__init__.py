"""The server side: the asyncio driver, the pure scheduler, and the supervised workers."""

from .scheduler import Job, Scheduler
from .server import Server, ServerFailure, ServerOptions
from .workers import Outcome, WorkerSlot, WorkerSpec

__all__ = ["Job", "Outcome", "Scheduler", "Server", "ServerFailure", "ServerOptions", "WorkerSlot", "WorkerSpec"]
