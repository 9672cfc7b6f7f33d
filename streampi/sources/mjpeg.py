"""HTTP MJPEG cameras: a ``multipart/x-mixed-replace`` response (RFC 2046 section 5.1's
multipart syntax, one JPEG per body part) read with the standard library. Each JPEG part goes out
as it came, a ``jpeg`` frame, undecoded: the server decodes it at the model's scale, and the camera
side spends nothing on pixels.

A part is passed on only when it is whole: with a ``Content-Length`` header, exactly that many
bytes; without one, everything up to the next boundary. A stream cut in the middle of a part
drops that part (counted as ``cut``) and the camera is reopened.
"""

from __future__ import annotations

import base64
import http.client
import socket
import time
import urllib.parse

from ..errors import SourceError
from .base import Frame
from .live import CameraError, LiveSource, is_transient, redact

OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0
MAX_PART_BYTES = 16 << 20  # a JPEG larger than this is not a camera frame: the stream is garbled
MAX_HEADER_LINES = 64


def boundary_of(content_type: str) -> str | None:
    """The boundary parameter of a ``multipart/x-mixed-replace`` Content-Type, or None."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/x-mixed-replace":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip().strip('"')
            return value[2:] if value.startswith("--") else value  # some cameras repeat the dashes
    return None


class _Response:
    """One HTTP connection to an MJPEG camera, read part by part."""

    def __init__(self, url: str, open_timeout: float, read_timeout: float) -> None:
        self.url = redact(url)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CameraError(f"{self.url} is not an http:// or https:// URL")
        conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        try:
            port = parts.port
        except ValueError as exc:
            raise CameraError(f"{self.url}: {exc}") from None
        self.conn = conn_class(parts.hostname, port, timeout=open_timeout)
        headers = {"Accept": "multipart/x-mixed-replace, image/jpeg", "User-Agent": "streampi"}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
            headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.closed = False
        self.n = self.cut = 0
        try:
            self.conn.request("GET", path, headers=headers)
            self.resp = self.conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            raise CameraError(f"{self.url} cannot be opened: {exc}", transient=is_transient(exc)) from None
        if self.resp.status != 200:
            self.conn.close()
            raise CameraError(f"{self.url} cannot be opened: HTTP {self.resp.status} {self.resp.reason}",
                              transient=self.resp.status >= 500)
        content_type = self.resp.getheader("Content-Type", "")
        boundary = boundary_of(content_type)
        if boundary is None:
            self.conn.close()
            raise CameraError(f"{self.url} is not an MJPEG stream: its Content-Type is {content_type!r}, "
                              f"not multipart/x-mixed-replace with a boundary")
        self.delimiter = b"--" + boundary.encode("latin-1")
        if self.conn.sock is not None:
            self.conn.sock.settimeout(read_timeout)
        self._at_part = False  # whether the next line is a part's first header line

    def _line(self) -> bytes:
        line = self.resp.fp.readline(65537) if self.resp.fp is not None else b""
        if not line:
            raise EOFError
        return line

    def _next_part_headers(self) -> dict[str, str]:
        if not self._at_part:  # skip the preamble (or a previous part's tail) up to a delimiter
            for _ in range(MAX_HEADER_LINES):
                if self._line().rstrip(b"\r\n").startswith(self.delimiter):
                    break
            else:
                raise CameraError(f"{self.url}: no multipart boundary {self.delimiter.decode('latin-1')!r} "
                                  f"in the stream")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            line = self._line().rstrip(b"\r\n")
            if not line:
                if headers:
                    return headers
                continue  # blank lines before the headers: tolerated
            if line.startswith(self.delimiter):  # an empty part
                continue
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        raise CameraError(f"{self.url}: a part's headers never end")

    def read(self) -> Frame | None:
        try:
            return self._read()
        except EOFError:
            return None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if self.closed:
                return None
            raise CameraError(f"{self.url}: {exc or type(exc).__name__}", transient=True) from None

    def _read(self) -> Frame | None:
        while True:
            headers = self._next_part_headers()
            captured = time.time()
            kind = headers.get("content-type", "image/jpeg").split(";")[0].strip().lower()
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit() or int(length) > MAX_PART_BYTES:
                    raise CameraError(f"{self.url}: a part's Content-Length is {length!r}")
                data = self.resp.read(int(length))
                if len(data) < int(length):
                    self.cut += 1
                    raise CameraError(f"{self.url}: the stream was cut in the middle of a JPEG "
                                      f"({len(data)} of {length} bytes)", transient=True)
                self._at_part = False
            else:
                data = self._until_delimiter()
            if kind not in ("image/jpeg", "image/jpg", "image/pjpeg"):
                continue  # not a picture (some cameras interleave text parts): skipped
            frame = Frame(data, "jpeg", f"{self.url} part {self.n}", captured=captured, decoded=time.time())
            self.n += 1
            return frame

    def _until_delimiter(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                line = self._line()
            except EOFError:
                self.cut += 1
                raise CameraError(f"{self.url}: the stream was cut in the middle of a JPEG "
                                  f"({size} bytes, no closing boundary)", transient=True) from None
            if line.startswith(self.delimiter) and line.rstrip(b"\r\n").rstrip(b"-") == self.delimiter.rstrip(b"-"):
                self._at_part = True
                data = b"".join(chunks)
                return data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
            size += len(line)
            if size > MAX_PART_BYTES:
                raise CameraError(f"{self.url}: a part without Content-Length runs past {MAX_PART_BYTES} bytes")
            chunks.append(line)

    def close(self) -> None:
        self.closed = True
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # ends a read waiting on another thread
            except OSError:
                pass
        self.conn.close()


class MjpegCamera(LiveSource):
    """An HTTP(S) MJPEG camera: each JPEG part a ``jpeg`` frame, undecoded; newest frame,
    reopened with back-off. Credentials may be given in the URL (HTTP Basic)."""

    def __init__(self, url: str, *, wait: bool = False, open_timeout: float = OPEN_TIMEOUT_S,
                 read_timeout: float = READ_TIMEOUT_S) -> None:
        if not url.startswith(("http://", "https://")):
            raise SourceError(f"{url} is not an http:// or https:// URL")
        self.url, self.open_timeout, self.read_timeout = url, open_timeout, read_timeout
        self.cut = 0
        super().__init__(redact(url), wait=wait)

    def _open(self) -> _Counted:
        return _Counted(self, _Response(self.url, self.open_timeout, self.read_timeout))


class _Counted:
    """A response whose cut parts add to its camera's count."""

    def __init__(self, camera: MjpegCamera, response: _Response) -> None:
        self.camera, self.response = camera, response

    def read(self) -> Frame | None:
        before = self.response.cut
        try:
            return self.response.read()
        finally:
            self.camera.cut += self.response.cut - before

    def close(self) -> None:
        self.response.close()

