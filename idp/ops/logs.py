"""Structured logs: one JSON object per line, each tied to its request and instance.

Every request gets a ``request_id``: the caller's ``X-Request-Id`` when it is a plain
token (a balancer's or an RP's correlation id), else a fresh random one; it is echoed in
the ``X-Request-Id`` response header and carried by every line logged while the request
runs, so one login can be followed across instances. ``instance`` names the process's
host (or ``IDP_INSTANCE_ID``) and ``pid`` the worker.

What is never logged: query strings and bodies (they carry codes, tokens, client
secrets, request objects), headers, personal attributes, JPKI data. The request line
holds method, path, endpoint, status and duration only; messages elsewhere name opaque
identifiers at most.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
from datetime import datetime, timezone

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-Id"
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_FIELDS = ("method", "path", "endpoint", "status", "duration_ms")

access = logging.getLogger("idp.request")


def instance_id() -> str:
    return os.environ.get("IDP_INSTANCE_ID") or socket.gethostname()


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a traceback, if any, is a field of it (still one line)."""

    def __init__(self, instance: str | None = None) -> None:
        super().__init__()
        self.instance = instance or instance_id()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "instance": self.instance,
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None) or _current_request_id()
        if request_id:
            entry["request_id"] = request_id
        for name in _FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _current_request_id() -> str | None:
    return g.get("request_id") if has_request_context() else None


def configure(level: int = logging.INFO) -> None:
    """Send log records to stderr as JSON lines (``idp serve``): the IdP's own from ``level``
    up, libraries' (alembic, urllib3…) from WARNING up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("idp").setLevel(level)


def new_request_id() -> str:
    """A request id unique across processes and instances without a random draw per request:
    a random prefix per process (drawn again in each forked worker) and a counter, 32 hex
    characters in all."""
    return f"{_id_prefix}{next(_id_counter):08x}"


def _new_id_prefix() -> None:
    global _id_prefix
    _id_prefix = secrets.token_hex(12)


_id_prefix = ""
_id_counter = itertools.count()
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def init_app(app: Flask) -> None:
    @app.before_request
    def _request_id() -> None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = offered if _PLAIN_TOKEN.fullmatch(offered) else new_request_id()
        g.request_started = time.perf_counter()

    @app.after_request
    def _echo_and_log(response: Response) -> Response:
        request_id = g.get("request_id") or new_request_id()
        response.headers[REQUEST_ID_HEADER] = request_id
        started = g.get("request_started")
        access.info("%s %s %s", request.method, request.path, response.status_code, extra={
            "request_id": request_id, "method": request.method, "path": request.path,
            "endpoint": request.endpoint or "", "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
        })
        return response
