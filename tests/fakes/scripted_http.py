"""A real HTTP server on 127.0.0.1 that answers from a script, for the fake model APIs.

Runs a stdlib ``ThreadingHTTPServer`` on an ephemeral port in a background thread, so the same object serves
sync tests, async tests and subprocesses (the real ``claude`` CLI). Subclasses decide what each request gets;
this module keeps the plumbing: the script queue, the request log (secrets masked), hangs that end when the
test releases them or the server stops.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_SECRET_HEADERS = {"authorization", "x-api-key", "proxy-authorization", "cookie"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.time)

    @property
    def route(self) -> str:
        return urlsplit(self.path).path


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload).encode(), dict(headers or {}))


@dataclass
class Hang:
    """Answer nothing until released (``server.release()``), ``max_s`` passes, or the server stops; then drop
    the connection. Clients see a read timeout."""

    max_s: float = 30.0


class ScriptedServer:
    """Base class. Subclasses implement ``handle`` and may use ``next_scripted``."""

    def __init__(self, default: Any = None) -> None:
        self._lock = threading.Lock()
        self._script: list[Any] = []
        self._log: list[RecordedRequest] = []
        self._closing = threading.Event()
        self._release = threading.Event()
        self.default = default
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> ScriptedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

            def _serve(self) -> None:
                server._dispatch(self)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=type(self).__name__)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- scripting ---------------------------------------------------------------------------------------
    def script(self, *responses: Any) -> None:
        """Queue responses; each scripted model call takes the next one, then ``default`` forever."""
        with self._lock:
            self._script.extend(responses)

    def next_scripted(self) -> Any:
        with self._lock:
            return self._script.pop(0) if self._script else self.default

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def release(self) -> None:
        """End every current and future hang."""
        self._release.set()

    # --- observation -------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def count(self, route: str | None = None, method: str | None = None) -> int:
        return sum(1 for r in self.requests
                   if (route is None or r.route == route) and (method is None or r.method == method))

    # --- plumbing ----------------------------------------------------------------------------------------
    def handle(self, request: RecordedRequest, raw_headers: dict[str, str]) -> Response | Hang:
        raise NotImplementedError

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        # Header names lower-cased: clients differ in case (httpx sends lower case, Node mixes).
        raw_headers = {k.lower(): v for k, v in handler.headers.items()}
        shown = {k: ("<redacted>" if k in _SECRET_HEADERS else v) for k, v in raw_headers.items()}
        record = RecordedRequest(handler.command, handler.path, shown, body)
        with self._lock:
            self._log.append(record)
        try:
            outcome = self.handle(record, raw_headers)
            if isinstance(outcome, Hang):
                self._hang(outcome)
                handler.close_connection = True
                return
            self._write(handler, outcome)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _hang(self, hang: Hang) -> None:
        deadline = time.monotonic() + hang.max_s
        while time.monotonic() < deadline and not self._closing.is_set() and not self._release.is_set():
            time.sleep(0.02)

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, response: Response) -> None:
        handler.send_response(response.status)
        handler.send_header("Content-Type", response.content_type)
        handler.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(response.body)
        handler.wfile.flush()
