"""Webhook mode's HTTP server: updates arrive by POST on the path registered with ``setWebhook``.

Replaces python-telegram-bot's built-in webhook server, which listens only on the path it is given (``/`` here
before), reads bodies up to tornado's 100 MB default into memory, answers malformed JSON with a 500 and logs a
body it cannot read at CRITICAL with its content. Here, in order, before the body is read: a wrong path is a
404, a missing or wrong secret token a 403, a declared body over ``MAX_BODY_BYTES`` a 413 (a chunked body is cut
off at the limit with a 413 too); then a body that is not a JSON object, or not an update, is a 400. Nothing from
the body is ever logged: only its size and what was wrong with it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from telegram import Bot, Update
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerRequest
from tornado.routing import PathMatches

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_048_576  # an update is a few kilobytes; Telegram sends nothing near this
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_path(url: str) -> str:
    """The path part of the registered webhook URL: what the server listens on ('/' when there is none)."""
    path = urlsplit(url).path
    return path if path.startswith("/") else f"/{path}"


@tornado.web.stream_request_body
class _UpdateHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("POST",)

    def initialize(self, bot: Bot, queue: asyncio.Queue[object], secret: str, max_body_bytes: int) -> None:
        self._bot = bot
        self._queue = queue
        self._secret = secret
        self._max_body_bytes = max_body_bytes
        self._chunks: list[bytes] = []
        self._size = 0

    def prepare(self) -> None:
        given = self.request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            raise tornado.web.HTTPError(HTTPStatus.FORBIDDEN, reason="missing or wrong secret token")
        declared = self.request.headers.get("Content-Length")
        if declared is not None and not _within(declared, self._max_body_bytes):
            raise tornado.web.HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, reason="body too large")
        # A chunked body has no length up front: data_received stops it at the limit with a 413. Tornado's own
        # cap (a 400 and a closed connection) stays above ours, so ours is the one that answers.
        _http1(self.request).set_max_body_size(16 * self._max_body_bytes)

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._size += len(chunk)
        if self._size > self._max_body_bytes:  # answer now and hang up: the rest is never read
            log.info("webhook: 413 from %s (a chunked body over %d bytes)", self.request.remote_ip, self._size)
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, reason="body too large")
            _http1(self.request).close()
            return
        self._chunks.append(chunk)

    async def post(self) -> None:
        body = b"".join(self._chunks)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._refuse(f"a body of {len(body)} bytes that is not JSON")
            return
        if not isinstance(data, dict):
            self._refuse(f"a JSON {type(data).__name__} of {len(body)} bytes, not an object")
            return
        try:
            update = Update.de_json(data, self._bot)
        except Exception as exc:  # whatever the library makes of a malformed update: it is the sender's fault
            self._refuse(f"a JSON object of {len(body)} bytes that is not an update ({type(exc).__name__})")
            return
        await self._queue.put(update)
        self.set_status(HTTPStatus.OK)
        self.finish()

    def _refuse(self, what: str) -> None:
        log.warning("webhook: refused %s", what)
        self.set_status(HTTPStatus.BAD_REQUEST)
        self.finish({"ok": False, "description": "malformed update"})

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            log.info("webhook: %d from %s (%s)", value.status_code, self.request.remote_ip, value.reason)
        else:
            log.error("webhook: handling a request failed: %r", value)


def _http1(request: HTTPServerRequest) -> HTTP1Connection:
    """The request's connection: tornado types it as the HTTPConnection interface (or None); our HTTPServer's
    connections are HTTP/1, which can cap a body and hang up."""
    connection = request.connection
    if not isinstance(connection, HTTP1Connection):
        raise TypeError(f"not an HTTP/1 connection: {connection!r}")
    return connection


def _within(declared: str, limit: int) -> bool:
    """A Content-Length that is a plain number no larger than ``limit`` (checked before any int() of it)."""
    return declared.isascii() and declared.isdigit() and len(declared) <= len(str(limit)) and int(declared) <= limit


class WebhookServer:
    """Serves ``POST <path>`` on ``listen:port`` and puts each update on ``queue`` (the Application's)."""

    def __init__(
        self,
        bot: Bot,
        queue: asyncio.Queue[object],
        *,
        listen: str,
        port: int,
        path: str,
        secret: str,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        options = {"bot": bot, "queue": queue, "secret": secret, "max_body_bytes": max_body_bytes}
        route = (PathMatches(re.escape(path)), _UpdateHandler, options)
        app = tornado.web.Application([route], log_function=lambda handler: None)
        self._server = HTTPServer(app, max_body_size=max_body_bytes)
        self._listen = listen
        self._port = port

    def start(self) -> None:
        self._server.listen(self._port, address=self._listen)

    async def stop(self) -> None:
        self._server.stop()
        await self._server.close_all_connections()
