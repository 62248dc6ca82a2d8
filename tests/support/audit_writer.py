"""Another process appending to the audit log, driven line by line over stdin/stdout.

    python -m tests.support.audit_writer DATABASE_URL

Commands (one per line; each answer is one JSON line):

- ``append N``: N entries, each in its own transaction; answers ``[[chain, seq, statements], ...]``
  (``statements``: the SQL statements the append sent).
- ``burst THREADS N``: answers ``"ready"``, waits for a line ``go``, then THREADS threads
  append N entries each at once; answers ``{"entries": [[chain, seq, thread, i], ...],
  "statements": [...]}``.
- ``hold``: one entry in a transaction left open; answers ``[chain, seq]`` and waits (to be
  killed).

The engine is the product's (``idp.storage.db.Database``: WAL, busy timeout, write gate).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from sqlalchemy import event

from idp import audit
from idp.storage.db import Database


class Writer:
    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.counted = threading.local()
        event.listen(self.db.engine, "before_cursor_execute", self._count)

    def _count(self, *_: Any) -> None:
        self.counted.n = getattr(self.counted, "n", 0) + 1

    def append(self, **data: Any) -> tuple[int, int, int]:
        with self.db.transaction() as session:
            session.connection()  # the transaction's own start is not the append's
            self.counted.n = 0
            entry = audit.record(session, "test.writer", **data)
            statements = self.counted.n
        return entry.chain, entry.seq, statements

    def burst(self, threads: int, count: int) -> dict[str, list[Any]]:
        entries: list[list[int]] = []
        statements: list[int] = []
        errors: list[BaseException] = []
        start = threading.Barrier(threads)

        def run(thread: int) -> None:
            try:
                start.wait(30)
                for i in range(count):
                    chain, seq, n = self.append(thread=thread, i=i)
                    entries.append([chain, seq, thread, i])
                    statements.append(n)
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                errors.append(exc)

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if errors:
            raise errors[0]
        return {"entries": entries, "statements": statements}


def main(url: str) -> None:
    writer = Writer(url)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "append":
            answer: Any = [writer.append(n=n) for n in range(int(args[0]))]
        elif command == "burst":
            print(json.dumps("ready"), flush=True)
            assert sys.stdin.readline().strip() == "go"
            answer = writer.burst(int(args[0]), int(args[1]))
        elif command == "hold":
            session = writer.db.sessions()
            entry = audit.record(session, "test.held")
            print(json.dumps([entry.chain, entry.seq]), flush=True)
            time.sleep(3600)
            continue
        else:
            raise SystemExit(f"unknown command {command!r}")
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
