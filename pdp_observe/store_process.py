"""The capture store written from its own process: rows are built here, committed there.

Why: per stored exchange the recorder spends about as long in SQLite (B-tree inserts into
the table and its indexes, WAL frames) as in everything else together (unpacking, redaction,
row building, compression, metrics), and Python runs one of them at a time. SQLite releases
the GIL for every row it steps, so a writer *thread* would wait up to the 5 ms switch
interval for the GIL after each row while the builder runs. A writer *process* has no such
wait: on a 2-core machine where the client, the proxy and the recorder share the cores,
the two halves pick up idle time on both cores at once.

Protocol (the recorder's worker thread ↔ ``python -m pdp_observe.store_process DB``): frames
of a 4-byte big-endian length and a pickle. Requests ``(kind, args)``: ``write`` (exchange
rows, extra rows by kind), ``update`` (decoded-column rows), ``counters`` (deltas), ``prune``
(max_age, max_bytes). Every request gets one reply ``(error_reason | None, value)``, in
order; the first frame the child sends is its ready reply (the file opened and migrated).
stdin closing makes the child commit what it read and exit, so it never outlives the
recorder. Only the recorder's worker thread calls a :class:`StoreClient`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Iterable

from .exchange import Exchange
from .store import Extra, RowBuilder, StoreError, StoreWriter, classify_sqlite_error

log = logging.getLogger("pdp_observe.store_process")

_PIPE_SIZE = 1 << 20  # a batch of rows in a few writes rather than 64 KiB at a time
MAX_PENDING = 4
"""Requests the child may be behind by before the worker waits for it. Rows waiting here are
already counted in no queue, so this bounds their memory (a batch is at most ~2,000 rows)."""


class StoreDown(StoreError):
    """The store process is gone: what it still owed and what follows is dropped as ``store_down``."""

    reason = "store_down"


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=5)
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, _PIPE_SIZE))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _recv(fd: int) -> Any:
    """The next frame, or ``EOFError`` when the other side closed."""
    head = _read_exact(fd, 4)
    if head is None:
        raise EOFError
    body = _read_exact(fd, int.from_bytes(head, "big"))
    if body is None:
        raise EOFError
    return pickle.loads(body)  # noqa: S301 - our own parent / child


def _grow(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:  # pipe-max-size lower than asked: the default works, in more writes
        pass


# ---- the child -------------------------------------------------------------------------------
def serve(path: str, fd_in: int = 0, fd_out: int = 1) -> int:
    """Commit requests until stdin closes. A reader thread keeps the pipe drained while a
    commit runs, so the recorder's write returns as soon as the bytes are copied."""
    try:
        writer = StoreWriter(path)
    except (StoreError, sqlite3.Error, OSError) as exc:
        _send(fd_out, (f"cannot open capture file {path!r}: {exc}", None))
        return 1
    _send(fd_out, (None, os.getpid()))
    inbox: deque[Any] = deque()
    ready = threading.Condition()

    def read() -> None:
        while True:
            try:
                item = _recv(fd_in)
            except (EOFError, OSError):
                item = None
            with ready:
                inbox.append(item)
                ready.notify()
            if item is None:
                return

    threading.Thread(target=read, name="pdp-store-reader", daemon=True).start()
    try:
        while True:
            with ready:
                while not inbox:
                    ready.wait()
                item = inbox.popleft()
            if item is None:
                return 0
            _send(fd_out, _handle(writer, *item))
    finally:
        writer.close()


def _handle(writer: StoreWriter, kind: str, args: Any) -> tuple[str | None, Any]:
    try:
        if kind == "write":
            return None, writer.commit(*args)
        if kind == "update":
            writer.commit_updates(args)
            return None, len(args)
        if kind == "counters":
            writer.add_counters(args)
            return None, None
        if kind == "prune":
            return None, writer.prune(max_age=args[0], max_bytes=args[1])
        return f"unknown request {kind!r}", None
    except Exception as exc:  # noqa: BLE001 - disk trouble is a reply, never a dead writer
        log.debug("store %s failed: %r", kind, exc)
        return classify_sqlite_error(exc), None


# ---- the recorder's side ---------------------------------------------------------------------
class StoreClient(RowBuilder):
    """Drop-in for :class:`StoreWriter` in the recorder worker, answering later.

    ``write``/``update_decoded``/``add_counters`` build the rows here and return once they
    are in the pipe; :meth:`completed` hands back, in order, what the child committed or
    why it could not. ``prune`` waits for its answer (it runs every few seconds at most).
    ``conn`` is a read connection (the live feed looks up the seqs of committed rows).
    """

    asynchronous = True

    RESPAWN_EVERY = 5.0

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        super().__init__()
        self.path = path
        self.timeout = timeout
        self._pending: deque[tuple[str, Any]] = deque()  # (kind, context) sent, reply not read
        self._done: deque[tuple[str, Any, str | None, Any]] = deque()
        self._replies: deque[Any] = deque()
        self._cv = threading.Condition()
        self.dead = True
        self._died_at = 0.0
        self.restarts = -1
        self._spawn()
        self.conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0)

    def _spawn(self) -> None:
        """Start the child and wait for its ready reply (raises StoreError if it cannot open
        the file). Whatever the previous child still owed is answered ``store_down`` first."""
        while self._pending:
            kind, context = self._pending.popleft()
            self._done.append((kind, context, "store_down", None))
        self._replies = deque()
        old = getattr(self, "proc", None)
        if old is not None:  # reap the dead one (its reply reader has seen its end already)
            try:
                old.stdin.close()
                old.wait(1)
            except (OSError, subprocess.TimeoutExpired):
                pass
        proc = subprocess.Popen(
            [sys.executable, "-m", "pdp_observe.store_process", self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        assert proc.stdin is not None and proc.stdout is not None
        fd_in = proc.stdout.fileno()
        try:
            reason, _pid = _recv(fd_in)
        except EOFError:
            reason = "the store process exited before it opened the file"
        if reason is not None:
            proc.stdin.close()
            proc.wait(5)
            raise StoreError(reason)
        _grow(proc.stdin.fileno())
        self.proc, self._out, self._in = proc, proc.stdin.fileno(), fd_in
        replies = self._replies
        threading.Thread(target=self._read, args=(fd_in, replies), name="pdp-store-replies", daemon=True).start()
        self.dead = False
        self.restarts += 1

    def _read(self, fd: int, replies: deque[Any]) -> None:
        while True:
            try:
                item = _recv(fd)
            except (EOFError, OSError):
                item = None
            with self._cv:
                replies.append(item)
                self._cv.notify_all()
            if item is None:
                return

    # ---- requests ------------------------------------------------------------------------
    def _request(self, kind: str, args: Any, context: Any) -> None:
        if self.dead:
            now = time.monotonic()
            if now - self._died_at < self.RESPAWN_EVERY:
                raise StoreDown("the store process exited")
            self._died_at = now
            try:
                self._spawn()
            except (StoreError, OSError) as exc:
                raise StoreDown(f"the store process could not be restarted: {exc}") from exc
            log.warning("store process restarted")
        while len(self._pending) >= MAX_PENDING:
            self._wait_one()
        try:
            _send(self._out, (kind, args))
        except OSError as exc:
            self._mark_dead()
            raise StoreDown(f"the store process exited: {exc}") from exc
        self._pending.append((kind, context))

    def write(self, exchanges: Iterable[Exchange], records: Iterable[Any] = ()) -> int:
        exchanges = list(exchanges)
        rows, extra = self.rows(exchanges, records)
        if rows or extra:
            self._request("write", (rows, extra), exchanges)
        return 0

    def commit(self, rows: list[tuple[Any, ...]], extra: Extra) -> int:
        self._request("write", (rows, extra), [])
        return 0

    def update_decoded(self, exchanges: Iterable[Exchange]) -> None:
        rows = self.decoded_rows(exchanges)
        if rows:
            self._request("update", rows, len(rows))

    def add_counters(self, deltas: dict[str, int]) -> None:
        items = {k: v for k, v in deltas.items() if v}
        if items:
            self._request("counters", items, items)

    def prune(self, *, max_age: float = 0.0, max_bytes: int = 0, now: float | None = None) -> dict[str, int]:
        self._request("prune", (max_age, max_bytes), None)
        while self._pending:
            kind, _context, reason, value = self._wait_one()
            if kind == "prune" and not self._pending:
                self._done.pop()  # answered here, not through completed()
                if reason is not None:
                    raise StoreError(f"retention pruning failed: {reason}")
                return dict(value)
        return {"age": 0, "size": 0}

    # ---- replies -------------------------------------------------------------------------
    def _wait_one(self) -> tuple[str, Any, str | None, Any]:
        """Block until the oldest pending request is answered (or the child is gone)."""
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while not self._replies and not self.dead:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            reply = self._replies.popleft() if self._replies else None
        kind, context = self._pending.popleft()
        if reply is None:
            self._mark_dead()
            reply = ("store_down", None)
        done = (kind, context, reply[0], reply[1])
        self._done.append(done)
        return done

    def _mark_dead(self) -> None:
        if self.dead:
            return
        self.dead, self._died_at = True, time.monotonic()
        log.warning("the store process exited (code %s); captures are dropped as store_down "
                    "until it is restarted", self.proc.poll())

    def completed(self) -> list[tuple[str, Any, str | None, Any]]:
        """``(kind, context, error_reason | None, value)`` of every answered request, oldest
        first; a dead child answers what it still owed with ``store_down``."""
        while self._pending and (self._replies or self.dead):
            self._wait_one()
        out = list(self._done)
        self._done.clear()
        return out

    def flush(self) -> None:
        while self._pending:
            self._wait_one()

    def close(self) -> None:
        """Wait for what was sent, then let the child finish and exit."""
        try:
            self.flush()
        finally:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                log.warning("store process did not exit; killing it")
                self.proc.kill()
                self.proc.wait(5)
            self.conn.close()


def main() -> int:
    fd_out = os.dup(1)
    os.dup2(2, 1)  # replies only on our own copy of stdout: a stray print cannot corrupt a frame
    logging.basicConfig(level=os.environ.get("PDP_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import signal  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the recorder decides when we stop
    return serve(sys.argv[1], 0, fd_out)


if __name__ == "__main__":
    sys.exit(main())
