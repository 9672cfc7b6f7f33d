"""Doors: the faces streampi shows to tools that already exist (Frigate's ``zmq`` detector,
the DeepStack / CodeProject.AI HTTP API, ...), one module per foreign protocol.

A door speaks its tool's protocol on a socket of its own and hands each request to the server
as a frame (:meth:`streampi.serving.server.Server.submit`): it is scheduled, batched and run
with every other frame, and answered exactly once through the door's callback. A door never
reaches into the server's internals; the server knows a door only by this interface:

- ``Door(options)``: made from :class:`~streampi.serving.options.ServerOptions` when the
  option naming it is set (:data:`DOORS`);
- ``await door.open(server) -> dict``: bind its socket (a :class:`~streampi.errors.StreampiError`
  saying why when it cannot: the server does not start); returns what to add to the server's
  ``bound`` endpoints (the ready line);
- ``await door.run()``: serve requests until cancelled; a client that misbehaves or goes
  away is the door's to handle, never a reason for it to end;
- ``door.stop_taking()``: at shutdown, before the server answers what it holds: take no new
  request (those held are still answered);
- ``await door.close()``: once every frame is answered: release the socket.

Each door's module is imported only when its option is set, so a server without doors loads
none of their dependencies (aiohttp is the ``web`` extra).
"""

from __future__ import annotations

import importlib
from typing import Any

#: option of ServerOptions that turns a door on -> (module, class)
DOORS: dict[str, tuple[str, str]] = {
    "frigate": ("streampi.integrations.frigate", "FrigateDoor"),
    "http": ("streampi.integrations.http", "HttpDoor"),
}


def doors_for(options: Any) -> list[Any]:
    """The doors ``options`` turn on, made and not yet opened."""
    doors = []
    for name, (module, cls) in DOORS.items():
        if getattr(options, name, None):
            doors.append(getattr(importlib.import_module(module), cls)(options))
    return doors
