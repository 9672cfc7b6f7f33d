"""CurveZMQ authentication and encryption for every streampi socket.

The server holds one secret certificate and a directory of the public certificates it lets
in (producers and subscribers alike); pyzmq's :class:`zmq.auth.thread.ThreadAuthenticator`
answers ZeroMQ's ZAP requests from that directory, so a client whose key is not there never
completes the handshake: none of its frames reaches the server's decoder, and it receives no
result. Clients hold their own secret certificate and the server's public one.

Certificates are pyzmq's text format (``zmq.auth.create_certificates``): ``NAME.key`` holds
the public key, ``NAME.key_secret`` both keys. See docs/security.md.

A client with the wrong server key is not told so by ZeroMQ: the server cannot decrypt its
hello and drops the connection, and the client keeps retrying. :class:`HandshakeWatch`
follows the socket's monitor events so that a client can fail with :class:`AuthError`
within its timeout instead of waiting for ever.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from .errors import AuthError

#: ZeroMQ's monitor events that end a CURVE handshake
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | _HANDSHAKE_FAILED | zmq.EVENT_DISCONNECTED


def _load(path: Any, *, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) keys of a certificate file, with a clear error for a bad path or file."""
    p = Path(path)
    what = "secret certificate (NAME.key_secret)" if secret else "public certificate (NAME.key)"
    if not p.is_file():
        raise AuthError(f"{what} {str(p)!r} does not exist or is not a file")
    try:
        public, secret_key = zmq.auth.load_certificate(p)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"{what} {str(p)!r} is not a ZeroMQ certificate: {exc}") from None
    if public is None or len(public) != 40:
        raise AuthError(f"{what} {str(p)!r} holds no valid public key")
    if secret and (secret_key is None or len(secret_key) != 40):
        raise AuthError(f"{str(p)!r} holds no secret key: pass the NAME.key_secret file, not NAME.key")
    return public, secret_key


def keygen(directory: Any, name: str = "streampi") -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (secret, mode 0600) in ``directory``
    (created if missing); return their paths. Refuses to overwrite an existing key."""
    if not name or "/" in name or name.startswith("."):
        raise AuthError(f"a key name must be a plain file name, got {name!r}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for suffix in (".key", ".key_secret"):
        if (d / f"{name}{suffix}").exists():
            raise AuthError(f"{d / (name + suffix)} exists already; remove it or choose another --name")
    public, secret = zmq.auth.create_certificates(d, name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


class CurveServer:
    """The server side: its keys, and the authenticator that admits the listed clients.

    >>> curve = CurveServer.from_files("server.key_secret", "clients/")   # doctest: +SKIP
    >>> curve.start(ctx); curve.apply(pull); curve.apply(pub)            # doctest: +SKIP
    """

    def __init__(self, public: bytes, secret: bytes, clients_dir: Path) -> None:
        self.public, self.secret, self.clients_dir = public, secret, clients_dir
        self._auth: ThreadAuthenticator | None = None

    @classmethod
    def from_files(cls, secret_file: Any, clients_dir: Any) -> CurveServer:
        if secret_file is None:
            raise AuthError("--curve-clients needs --curve-secret SERVER.key_secret: the server's own keys")
        if clients_dir is None:
            raise AuthError("--curve-secret needs --curve-clients DIR: the public certificates of allowed clients")
        public, secret = _load(secret_file, secret=True)
        d = Path(clients_dir)
        if not d.is_dir():
            raise AuthError(f"client certificate directory {str(d)!r} does not exist or is not a directory")
        keys = list(d.glob("*.key"))
        if not keys:
            raise AuthError(f"no public certificates (*.key) in {str(d)!r}: no client could connect")
        for k in keys:
            _load(k, secret=False)
        assert secret is not None
        return cls(public, secret, d)

    def start(self, ctx: zmq.Context) -> None:
        """Start answering ZAP requests for the sockets of ``ctx`` (an asyncio context works:
        the authenticator runs on a blocking twin of it, in its own thread)."""
        sync_ctx = zmq.Context.shadow(ctx.underlying)
        self._auth = ThreadAuthenticator(sync_ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(self.clients_dir))

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server with this server's keys (before it binds)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def apply_client(sock: zmq.Socket, secret_file: Any, server_public_file: Any) -> None:
    """Make ``sock`` a CURVE client with its own keys and the server's public key (before it
    connects)."""
    if secret_file is None or server_public_file is None:
        raise AuthError("CurveZMQ needs both curve_secret= (this client's NAME.key_secret) and "
                        "curve_server= (the server's public NAME.key)")
    public, secret = _load(secret_file, secret=True)
    server_public, _ = _load(server_public_file, secret=False)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


class HandshakeWatch:
    """Follows a client socket's handshakes through a ZeroMQ monitor socket."""

    def __init__(self, sock: zmq.Socket, endpoint: str) -> None:
        self.endpoint = endpoint
        self.succeeded = False
        self.failures: list[str] = []
        self.disconnects = 0
        addr = f"inproc://streampi-monitor-{id(self)}-{time.monotonic_ns()}"
        sock.monitor(addr, _WATCHED)
        self._sock = sock
        self._mon = zmq.Context.shadow(sock.context.underlying).socket(zmq.PAIR)
        self._mon.setsockopt(zmq.LINGER, 0)
        self._mon.connect(addr)

    def poll(self, timeout: float = 0.0) -> bool:
        """Read the events so far (waiting up to ``timeout`` s for the first); True once a
        handshake succeeded."""
        wait = int(timeout * 1000)
        while self._mon.poll(wait):
            wait = 0
            event = parse_monitor_message(self._mon.recv_multipart())
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded = True
            elif kind & _HANDSHAKE_FAILED:
                self.failures.append(f"{zmq.Event(kind).name} ({event['value']})")
            elif kind == zmq.EVENT_DISCONNECTED:
                self.disconnects += 1
        return self.succeeded

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.succeeded and (left := deadline - time.monotonic()) > 0:
            self.poll(min(left, 0.05))
        return self.succeeded

    def error(self, timeout: float | None) -> AuthError:
        """The error to raise when nothing got through within ``timeout``."""
        self.poll()
        if any("AUTH" in f for f in self.failures):
            why = "the server refused this client's key (is its NAME.key in the server's --curve-clients directory?)"
        elif self.failures or self.disconnects:
            why = ("the server dropped the handshake: curve_server= is probably not this server's public key, "
                   "or the server does not use CurveZMQ")
        else:
            why = "no server answered (is it running, and listening at this address?)"
        return AuthError(f"no CurveZMQ handshake with {self.endpoint} within {timeout} s: {why}")

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._mon.close()


def is_loopback(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint stays on this machine (ipc/inproc, or tcp on a loopback address)."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def warn_if_exposed(endpoints: list[str], curve: bool) -> None:
    """Say so on stderr when a socket listens beyond this machine without CurveZMQ."""
    import sys

    exposed = [e for e in endpoints if not is_loopback(e)]
    if exposed and not curve:
        print(f"streampi: warning: {', '.join(exposed)} accept(s) frames or serve results to anyone on the network "
              "without authentication; see docs/security.md (--curve-secret/--curve-clients)", file=sys.stderr)
