"""What ``idp serve`` sets up around gunicorn: the metrics folder, worker hooks, shutdown.

Prometheus' multiprocess mode needs ``PROMETHEUS_MULTIPROC_DIR`` set before
``prometheus_client`` is first imported, and the folder emptied at each start (stale
files from a previous run would be summed in); ``prepare_metrics_dir`` does both, making
a private temporary folder when the operator named none. Dead workers' live gauges are
dropped (``child_exit``).

Graceful shutdown (gunicorn's own): on SIGTERM the arbiter stops accepting connections,
each worker finishes its in-flight requests and exits; whatever still runs after
``GRACEFUL_TIMEOUT`` seconds is killed, so a stop is bounded. The database transaction
of a killed request is rolled back by the database, never half-committed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

GRACEFUL_TIMEOUT = 20
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir() -> Path:
    """Empty (or create) the multiprocess metrics folder; call before importing the app."""
    named = os.environ.get(METRICS_ENV)
    if named:
        folder = Path(named)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return folder
    folder = Path(tempfile.mkdtemp(prefix="idp-metrics-"))
    os.environ[METRICS_ENV] = str(folder)
    master = os.getpid()
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(folder, ignore_errors=True))
    return folder


def json_logger_class() -> type:
    """gunicorn's own logger, writing its lines (start, worker exits) as JSON too."""
    from gunicorn.glogging import Logger

    from idp.ops.logs import JsonFormatter

    class JsonLogger(Logger):  # type: ignore[misc]
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())

    return JsonLogger


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: drop a dead worker's live gauges (the library's multiprocess rule)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_fork_database(database: Any) -> Any:
    """gunicorn hook factory: each worker opens its own connections (never the arbiter's)
    and, on SQLite, checkpoints the WAL in its own thread (``idp.storage.db``)."""

    def post_fork(server: Any, worker: Any) -> None:
        database.after_fork()

    return post_fork
