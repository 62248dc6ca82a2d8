"""SQLite's write-ahead log is copied into the database file by a thread of each serving
process, not by the request whose commit happens to cross SQLite's threshold.

By default SQLite checkpoints in the commit that takes the WAL past 1000 pages: that
request copies about 4 MB into the database file and waits for two fsyncs, and it does so
while it still holds the write gate (``idp.storage.write_gate`` releases it when the
connection goes back to the pool), so every queued writer waits as well. Measured over
7,577 login commits: 51 took over 2 ms (up to 13 ms); with the checkpoint moved off the
requests, 3 did, up to 4 ms (bench/README.md).

A serving process therefore turns the automatic checkpoint off on its own connections
(``PRAGMA wal_autocheckpoint=0``) and runs ``PRAGMA wal_checkpoint(PASSIVE)`` every
``INTERVAL`` seconds on a connection of its own. A PASSIVE checkpoint takes no write lock
and waits for no reader (https://www.sqlite.org/wal.html §"Checkpointing"), so no request
waits for it; several processes doing it at once take turns on SQLite's checkpoint lock
without waiting (busy timeout 0). Durability is unchanged: a commit is in the WAL before it
returns, and the WAL is replayed on the next open after a crash. Other processes (the
``idp`` command, tests serving in-process) keep SQLite's own rule, and SQLite checkpoints
on the last connection's close as ever.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)
INTERVAL = 0.5  # s; a login writes about 30 pages, SQLite's own threshold (1,000) is some 30 logins


class WalCheckpointer:
    def __init__(self, database_path: Path, interval: float = INTERVAL) -> None:
        self.path = database_path
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # completed checkpoints (tests, diagnostics)

    def attach(self, engine: Engine) -> None:
        """Connections opened from now on leave checkpoints to this thread, which starts now;
        call it with an empty pool (a forked worker's, ``idp.ops.serving``)."""
        event.listen(engine, "connect", _no_automatic_checkpoint)
        self._thread = threading.Thread(target=self._run, name="idp-wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, frames in the WAL, frames copied back)."""
        with closing(sqlite3.connect(self.path, timeout=0)) as connection:
            busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return busy, frames, copied

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except sqlite3.Error:  # the next round tries again; SQLite keeps the WAL meanwhile
                log.warning("WAL checkpoint of %s failed", self.path, exc_info=True)


def _no_automatic_checkpoint(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
