"""The SQLite write gate (idp.storage.write_gate): writers queue and are handed the gate the
moment it frees; a writer that dies holding it does not keep it; a wait is bounded."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from idp.storage.db import Database
from idp.storage.write_gate import WriteGate


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path}/gate.sqlite3")
    with db.engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
    yield db
    db.dispose()


def test_a_second_writer_waits_for_the_first_to_commit_and_is_then_let_in_at_once(database: Database) -> None:
    holding = threading.Event()
    times: dict[str, float] = {}

    def first() -> None:
        with database.engine.connect() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            times["held"] = time.monotonic()
            time.sleep(0.45)  # holds SQLite's write lock, and the gate
            connection.commit()
        times["released"] = time.monotonic()

    def second() -> None:
        holding.wait(5)
        with database.engine.connect() as connection:
            connection.execute(text("INSERT INTO t VALUES (2)"))
            times["entered"] = time.monotonic()
            connection.commit()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert times["entered"] - times["held"] >= 0.44  # it waited for the first writer ...
    assert abs(times["entered"] - times["released"]) < 0.06  # ... and was let in on release, not after a sleep
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 2


def test_a_writer_killed_while_holding_the_gate_does_not_keep_it(tmp_path: Path) -> None:
    gate = WriteGate(tmp_path / "db.sqlite3", timeout=2)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only holds the gate until it is killed
        gate.acquire(object())
        time.sleep(60)
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while _free(gate.path) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the child holds it
        assert not _free(gate.path)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        holder = object()
        started = time.monotonic()
        gate.acquire(holder)
        assert time.monotonic() - started < 0.5
        gate.release(holder)
    finally:
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_a_wait_for_the_gate_is_bounded_and_is_a_database_error(tmp_path: Path) -> None:
    gate, other = WriteGate(tmp_path / "db.sqlite3", timeout=0.2), WriteGate(tmp_path / "db.sqlite3", timeout=0.2)
    holder = object()
    gate.acquire(holder)
    try:
        result: list[BaseException] = []
        thread = threading.Thread(target=lambda: _try(other, result))  # another open file: like another process
        started = time.monotonic()
        thread.start()
        thread.join(5)
        assert isinstance(result[0], OperationalError)  # answered as a 503 (idp.ops.outage)
        assert 0.2 <= time.monotonic() - started < 2
    finally:
        gate.release(holder)


def _try(gate: WriteGate, result: list[BaseException]) -> None:
    try:
        gate.acquire(object())
    except BaseException as exc:  # noqa: BLE001 - the test looks at it
        result.append(exc)


def _free(path: Path) -> bool:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_threads_of_a_fresh_worker_share_one_gate_and_leave_it_open(tmp_path: Path) -> None:
    """A worker forked from the arbiter gets its own descriptor at once, so its threads' first
    writes, all at the same moment, can neither run together nor leave the gate shut."""
    gate = WriteGate(tmp_path / "db.sqlite3", timeout=5)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked "worker"
        inside, overlaps, start = [0], [0], threading.Barrier(4)

        def writer() -> None:
            start.wait()
            for _ in range(50):
                holder = object()
                gate.acquire(holder)
                inside[0] += 1
                overlaps[0] += inside[0] > 1
                inside[0] -= 1
                gate.release(holder)

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        os._exit(0 if overlaps[0] == 0 and not any(t.is_alive() for t in threads) else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _free(gate.path)
