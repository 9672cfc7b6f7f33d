"""Everything ``streampi serve`` can set, checked in one place.

Light on purpose: importing it (the command line's ``--help``, a config file check) loads
neither an interpreter nor the compiled kernels.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field

from ..protocol import Limits
from .scheduler import POLICIES

#: where a worker's interpreter runs: a runner process of its own, or the worker thread itself
ISOLATIONS = ("process", "thread")


def process_isolation_available() -> bool:
    return hasattr(os, "memfd_create") and "forkserver" in multiprocessing.get_all_start_methods()


@dataclass
class ServerOptions:
    """Everything ``streampi serve`` can set (see ``streampi serve --help``)."""

    bind: str = "tcp://127.0.0.1:5555"  # protocol v1: PUSH producers (no flow control)
    credit_bind: str | None = "tcp://127.0.0.1:5558"  # protocol v1.1: DEALER producers with credit; None: off
    credit: int = 0  # frames a v1.1 producer may have in flight; 0: workers + 1 (latest), queue-size (queue)
    publish: str = "tcp://127.0.0.1:5556"
    control: str | None = "tcp://127.0.0.1:5557"
    workers: int | None = None
    threads: int = 1
    light_threads: int | None = None  # a lone frame while the other workers idle: None every core, 0 off
    max_batch: int = 4
    max_delay_ms: float = 0.0
    policy: str = "latest"
    stream_policies: dict[str, str] = field(default_factory=dict)
    queue_size: int = 32
    max_streams: int = 256
    recv_hwm: int = 64
    send_hwm: int = 100_000
    pin: bool = True
    backend: str | None = None
    delegates: list[tuple[str, dict]] = field(default_factory=list)  # (library, options); CPU if it fails
    limits: Limits = field(default_factory=Limits)
    isolation: str = "process"
    invoke_timeout: float = 10.0
    stop_timeout: float = 5.0
    max_frame_memory: int = 256 * 2**20  # bytes of frames held (waiting or running); past it: overloaded. 0: none
    metrics_port: int | None = None  # Prometheus endpoint; None: off
    curve_secret: str | None = None  # the server's NAME.key_secret (streampi.auth): CurveZMQ on every socket
    curve_clients: str | None = None  # directory of the allowed clients' NAME.key
    metrics_bind: str = "127.0.0.1"
    shared_memory: bool = True  # hand v1.1 producers on this machine that ask a shared-memory ring for their frames

    def check(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        for stream, pol in self.stream_policies.items():
            if pol not in POLICIES:
                raise ValueError(f"policy of stream {stream!r} must be one of {POLICIES}, got {pol!r}")
        for name in ("threads", "max_batch", "queue_size", "max_streams", "recv_hwm"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.light_threads is not None and self.light_threads < 0:
            raise ValueError(f"light-threads must be >= 0 (0: off), got {self.light_threads}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max-delay-ms must be >= 0, got {self.max_delay_ms}")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {self.isolation!r}")
        if self.isolation == "process" and not process_isolation_available():
            raise ValueError("isolation 'process' needs Linux (fork server and memfd); use --isolation thread")
        if not self.invoke_timeout > 0:
            raise ValueError(f"invoke-timeout must be > 0 seconds, got {self.invoke_timeout}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics-port must be a TCP port (0 for any free one), got {self.metrics_port}")
        if self.credit < 0:
            raise ValueError(f"credit must be >= 0 (0: workers + 1 for latest streams, queue-size for queue "
                             f"streams), got {self.credit}")
        if self.max_frame_memory < 0:
            raise ValueError(f"max-frame-memory must be >= 0 bytes (0: no budget), got {self.max_frame_memory}")
        if not self.stop_timeout > 0:
            raise ValueError(f"stop-timeout must be > 0 seconds, got {self.stop_timeout}")
