"""The store written from its own process: same rows, same drop accounting, no orphan process."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest

from pdp_observe.hub import Recorder
from pdp_observe.redact import Redactor
from pdp_observe.store import StoreError, StoreReader
from pdp_observe.store_process import StoreClient
from tests.integration.test_recorder_process import alive
from tests.integration.test_store import _engine_capture, raw


class Seen:
    """A sink that checks each exchange it is handed is already committed (the live feed
    looks up their seqs the moment it gets them)."""

    name = "seen"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.ids: list[str] = []
        self.uncommitted = 0

    def handle(self, exchanges) -> None:  # type: ignore[no-untyped-def]
        for ex in exchanges:
            self.ids.append(ex.id)
            if self.conn.execute("SELECT 1 FROM exchanges WHERE id = ?", (ex.id,)).fetchone() is None:
                self.uncommitted += 1


def wait(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def recorder(db: str, **kw) -> tuple[Recorder, StoreClient, Seen]:  # type: ignore[no-untyped-def]
    client = StoreClient(db)
    rec = Recorder(client, redactor=Redactor(), body_limit=1 << 20, **kw)
    seen = Seen(client.conn)
    rec.sinks.append(seen)
    return rec, client, seen


def test_rows_are_committed_by_the_child_and_handed_on_only_once_committed(tmp_path):
    db = str(tmp_path / "c.db")
    rec, client, seen = recorder(db)
    child = client.proc.pid
    assert child != os.getpid() and alive(child)
    rec.start()
    secret = b"Bearer sk-live-should-not-reach-disk"
    for i in range(3000):
        cap = raw(i)
        cap.req_headers = [*cap.req_headers, (b"Authorization", secret)]
        rec.submit(cap)
    wait(lambda: rec.stored == 3000)
    rec.stop()
    assert not alive(child), "the store process outlived its recorder"
    reader = StoreReader(db)
    assert reader.count() == 3000
    assert sorted(int(r.path.split("=")[1]) for r in reader.iter_all()) == list(range(3000))
    assert len(seen.ids) == 3000 and seen.uncommitted == 0
    assert rec.dropped() == {}
    with open(db, "rb") as f:
        assert b"sk-live-should-not-reach-disk" not in f.read()


def test_a_failing_disk_in_the_child_is_counted_by_reason(tmp_path):
    db = str(tmp_path / "c.db")
    rec, client, seen = recorder(db)
    # the next inserts fail inside the child the way a full disk does
    client.conn.execute("CREATE TRIGGER full BEFORE INSERT ON exchanges "
                        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    client.conn.commit()
    rec.process([raw(i) for i in range(5)])
    client.flush()
    rec._collect()
    assert rec.dropped() == {"disk_full": 5} and rec.stored == 0
    assert len(seen.ids) == 5  # sinks (metrics, live counts) still see the traffic
    client.conn.execute("DROP TRIGGER full")
    client.conn.commit()
    rec.process([raw(i) for i in range(5, 8)])
    rec.stop()
    assert rec.stored == 3
    reader = StoreReader(db)
    assert reader.count() == 3
    assert reader.counters() == {"dropped.disk_full": 5}


def test_a_killed_store_process_costs_captures_as_store_down_then_comes_back(tmp_path, caplog):
    db = str(tmp_path / "c.db")
    rec, client, _ = recorder(db)
    client.RESPAWN_EVERY = 0.3
    rec.process([raw(i) for i in range(10)])
    client.flush()
    rec._collect()
    first = client.proc.pid
    os.kill(first, signal.SIGKILL)
    client.proc.wait(5)
    rec.process([raw(i) for i in range(10, 14)])  # the write meets a dead pipe or a dead reader
    client.flush()
    rec._collect()
    assert rec.dropped() == {"store_down": 4}
    time.sleep(0.35)
    rec.process([raw(i) for i in range(14, 20)])
    rec.stop()
    assert client.proc.pid != first and client.restarts == 1
    assert "store process exited" in caplog.text
    reader = StoreReader(db)
    assert sorted(int(r.path.split("=")[1]) for r in reader.iter_all()) == [*range(10), *range(14, 20)]
    assert reader.counters() == {"dropped.store_down": 4}


def test_deferred_decoding_and_retention_run_through_the_child(tmp_path):
    db = str(tmp_path / "c.db")
    from pdp_observe.pipeline import DecodeOperations

    rec, client, _ = recorder(db, max_age=60.0)
    decode = DecodeOperations()
    rec.processors.append(decode)
    rec.late_decode = decode.late
    rec.defer_backlog, rec.batch_max = 2, 4
    old = _engine_capture(0)
    old.wall = time.time() - 3600  # past --max-age
    rec.submit(old)
    for i in range(1, 8):
        rec.submit(_engine_capture(i))
    while batch := rec._take_batch():
        rec.process(batch)
    rec._decode_deferred()
    client.flush()
    rec._collect()
    assert rec.decode_deferred == 4 and rec.decoded_late == 4
    assert {(r.model, r.action) for r in StoreReader(db).iter_all()} == {("User", "findMany")}
    assert client.prune(max_age=60.0) == {"age": 1, "size": 0}
    rec.stop()
    assert StoreReader(db).count() == 7


def test_a_file_it_cannot_open_is_a_clear_error_and_no_process_is_left(tmp_path):
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    before = set(os.listdir("/proc"))
    with pytest.raises(StoreError, match="cannot open capture file"):
        StoreClient(str(bad))
    time.sleep(0.1)
    leftover = [p for p in set(os.listdir("/proc")) - before
                if p.isdigit() and "pdp_observe.store_process" in _cmdline(p)]
    assert leftover == []


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""
