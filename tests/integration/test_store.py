"""The capture store: crash safety, migrations, retention, and drops that never touch traffic."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

import aiohttp

from pdp_observe.capture import RawCapture, build_exchange
from pdp_observe.hub import Recorder
from pdp_observe.redact import Redactor
from pdp_observe.sidecar import start_sidecar
from pdp_observe.store import SCHEMA_VERSION, RowBuilder, StoreReader, StoreWriter, migrate
from tests.conftest import await_stored, make_settings, run_cli


def raw(i: int, wall: float | None = None, body: bytes = b'{"x":1}') -> RawCapture:
    now = time.perf_counter()
    cap = RawCapture(wall or time.time(), now, "POST", f"/q?i={i}", "1.1", "127.0.0.1", "http://u",
                     [(b"Content-Type", b"application/json")])
    cap.req_body, cap.req_size = body, len(body)
    cap.status, cap.reason, cap.resp_headers = 200, "OK", [(b"Content-Length", b"2")]
    cap.resp_body, cap.resp_size = b"{}", 2
    cap.t_first_byte = cap.t_done = now + 0.001
    return cap


async def test_kill_9_mid_load_keeps_committed_rows(upstream, proxy_process, tmp_path):
    db = tmp_path / "c.db"
    proxy = proxy_process(upstream[0], db)
    stop = asyncio.Event()
    sent = 0

    async def load(s: aiohttp.ClientSession) -> None:
        nonlocal sent
        while not stop.is_set():
            try:
                async with s.post(f"{proxy.url}/echo?n={sent}", data=b'{"a":1}') as r:
                    await r.read()
                sent += 1
            except aiohttp.ClientError:
                return

    async with aiohttp.ClientSession() as s:
        tasks = [asyncio.ensure_future(load(s)) for _ in range(8)]
        deadline = time.monotonic() + 30
        while sent < 300 and time.monotonic() < deadline:  # mid-load, however slow the machine is
            await asyncio.sleep(0.05)
        proxy.kill9()  # no drain, no checkpoint
        stop.set()
        await asyncio.gather(*tasks)
    assert sent > 100
    reader = StoreReader(str(db))
    assert reader.check() == []
    rows = list(reader.iter_all())
    assert 0 < len(rows) <= sent
    for r in rows[:: max(1, len(rows) // 50)]:  # every stored row decodes in full
        ex = reader.get(r.id)
        assert ex.request.body.data == b'{"a":1}' and ex.response.status == 200


def test_migrates_a_v1_file_forward_keeping_rows(tmp_path):
    db = str(tmp_path / "v1.db")
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrate(conn, upto=1) == 1
    w = RowBuilder(train_after=0)  # a row as a v1 writer wrote it: the v1 columns only
    ex = Recorder(None, redactor=Redactor(), body_limit=1 << 20).process([raw(1)])[0]
    conn.execute("INSERT INTO exchanges (id, ts, method, path, status, duration_ms, req_bytes, resp_bytes, "
                 "failure, truncated, record, req_body, resp_body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                 w._row(ex)[:13])
    conn.close()

    reader = StoreReader(db)  # opening migrates
    assert reader.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION
    assert reader.check() == []
    assert reader.get(ex.id).request.path == "/q?i=1"
    assert reader.counters() == {} and reader.transactions() == []
    assert reader.last(1)[0].model is None  # decoded columns exist, empty for old rows


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    db = str(tmp_path / "new.db")
    StoreWriter(db).close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    conn.commit()
    conn.close()
    res = run_cli("ls", "--db", db)
    assert res.returncode == 2 and "newer than this pdp_observe" in res.stderr


def test_retention_prunes_oldest_by_age_and_size(tmp_path):
    w = StoreWriter(str(tmp_path / "r.db"))
    rec = Recorder(None, redactor=Redactor(), body_limit=1 << 20)
    now = time.time()
    old = rec.process([raw(i, wall=now - 10 * 86400 + i) for i in range(10)])
    new = rec.process([raw(100 + i, wall=now - 100 + i, body=bytes(range(256)) * 40) for i in range(300)])
    w.write(old + new)
    assert w.prune(max_age=7 * 86400) == {"age": 10, "size": 0}
    before = w.used_bytes()
    pruned = w.prune(max_bytes=before // 3)
    assert pruned["size"] > 0 and w.used_bytes() <= before // 3
    reader = StoreReader(w.path)
    remaining = [r.path for r in reader.iter_all()]
    # the newest survive, the oldest went first
    assert remaining == [f"/q?i={100 + i}" for i in range(300 - len(remaining), 300)]


class BlockingWriter(StoreWriter):
    """A disk that stalls: every write waits until released."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.release = threading.Event()

    def write(self, exchanges, transactions=()):  # type: ignore[override]
        self.release.wait(30)
        return super().write(exchanges, transactions)


class FailingWriter(StoreWriter):
    """A disk that is full: every write fails the way SQLite reports it."""

    def write(self, exchanges, transactions=()):  # type: ignore[override]
        raise sqlite3.OperationalError("database or disk is full")


async def _hammer(port: int, n: int) -> list[int]:
    async with aiohttp.ClientSession() as s:
        async def one(i: int) -> int:
            async with s.post(f"http://127.0.0.1:{port}/echo?i={i}", data=b"{}") as r:
                await r.read()
                return r.status
        return await asyncio.gather(*(one(i) for i in range(n)))


async def test_full_queue_drops_captures_not_traffic(upstream, tmp_path):
    db = tmp_path / "c.db"
    writer = BlockingWriter(str(db))
    sc = await start_sidecar(make_settings(upstream[0], db, queue_max=20), writer=writer)
    sc.recorder.batch_max = 1  # the stuck write holds one capture; the queue holds 20 more
    try:
        statuses = await _hammer(sc.port, 300)
        assert statuses == [200] * 300  # traffic untouched while the disk is stuck
        dropped = sc.recorder.dropped()
        assert dropped["queue_full"] >= 300 - 21
        writer.release.set()
        await await_stored(sc, 300)
        assert sc.recorder.stored + dropped["queue_full"] == 300
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{sc.admin_port}/metrics") as r:
                text = await r.text()
        assert f'pdp_captures_dropped_total{{reason="queue_full"}} {float(dropped["queue_full"])}' in text
    finally:
        await sc.stop()
    res = run_cli("ls", "--db", str(db))
    assert res.returncode == 0
    assert f"{dropped['queue_full']} captures dropped (queue_full: {dropped['queue_full']})" in res.stderr


async def test_failing_disk_drops_are_counted_and_traffic_is_fine(upstream, tmp_path, caplog):
    db = tmp_path / "c.db"
    sc = await start_sidecar(make_settings(upstream[0], db), writer=FailingWriter(str(db)), report_every=0.2)
    try:
        statuses = await _hammer(sc.port, 200)
        assert statuses == [200] * 200
        await await_stored(sc, 200)
        assert sc.recorder.stored == 0
        assert sc.recorder.dropped() == {"disk_full": 200}
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{sc.admin_port}/healthz") as r:
                assert (await r.json())["dropped"] == {"disk_full": 200}
    finally:
        await sc.stop()
    assert "captures dropped so far: 200 (disk_full=200)" in caplog.text


def test_ls_reports_drops_recorded_in_the_file(tmp_path):
    w = StoreWriter(str(tmp_path / "c.db"))
    w.add_counters({"dropped.queue_full": 3, "dropped.disk_full": 2, "pruned.age": 7})
    w.close()
    res = run_cli("ls", "--db", str(tmp_path / "c.db"))
    assert "5 captures dropped (disk_full: 2, queue_full: 3)" in res.stderr
    assert "7 pruned by retention (age: 7)" in res.stderr


def _engine_capture(i: int) -> RawCapture:
    """A Prisma engine JSON-protocol findMany (protocols.md A.2) with a per-request value."""
    body = (b'{"modelName":"User","action":"findMany","query":{"arguments":{"where":{"id":%d}},'
            b'"selection":{"$scalars":true}}}' % i)
    cap = raw(i, body=body)
    cap.path = "/"
    cap.resp_body = b'{"data":{"findManyUser":[]}}'
    cap.resp_size = len(cap.resp_body)
    return cap


def test_backlog_stores_every_exchange_and_decodes_it_once_the_worker_catches_up(tmp_path):
    from pdp_observe.recording import build_recording

    settings = make_settings("http://127.0.0.1:9", tmp_path / "c.db")
    side = build_recording(settings)
    rec = side.recorder
    rec.defer_backlog, rec.defer_max, rec.batch_max = 4, 8, 4
    for i in range(12):
        rec.submit(_engine_capture(i))
    # 12 queued, batches of 4: the first two leave >= 4 behind them, so they are stored undecoded
    for _ in range(3):
        rec.process(rec._take_batch())
    stored = list(StoreReader(settings.db).iter_all())  # every exchange stored
    assert len(stored) == 12
    assert rec.decode_deferred == 8 and rec.undecoded == 0
    undecoded = [r for r in stored if r.model is None]
    assert len(undecoded) == 8
    # idle: the deferred ones are decoded and their rows rewritten (columns and record)
    rec._decode_deferred()
    again = list(StoreReader(settings.db).iter_all())
    assert {(r.model, r.action) for r in again} == {("User", "findMany")}
    ex = StoreReader(settings.db).get(undecoded[0].id)
    assert ex.operation is not None and ex.operation.fingerprint
    assert ex.operation.fingerprint == StoreReader(settings.db).get(stored[-1].id).operation.fingerprint
    assert rec.decoded_late == 8
    rec.writer.close()


def test_deferred_past_the_limit_stay_undecoded_and_ls_says_so(tmp_path):
    from pdp_observe.recording import build_recording

    settings = make_settings("http://127.0.0.1:9", tmp_path / "c.db")
    rec = build_recording(settings).recorder
    rec.defer_backlog, rec.defer_max, rec.batch_max = 1, 3, 5
    for i in range(10):
        rec.submit(_engine_capture(i))
    rec.process(rec._take_batch())  # 5 deferred, room for 3: 2 stay undecoded
    assert (rec.decode_deferred, rec.undecoded) == (5, 2)
    rec.process(rec._take_batch())  # nothing left behind it: decoded now
    rec._decode_deferred()
    rec._flush_counters()
    rec.writer.close()
    assert sum(r.model is None for r in StoreReader(settings.db).iter_all()) == 2
    res = run_cli("ls", "--db", settings.db)
    assert "2 stored without their Prisma operation decoded" in res.stderr


def test_late_decoding_waits_for_spare_time_and_held_bodies_are_bounded(tmp_path):
    """Exchanges stored undecoded are decoded by the running worker only once capture
    processing kept it busy less than half of the last second (under steady load the queue is
    empty between frames, and decoding old exchanges then cost the new ones); the ones held
    for it are bounded by their body bytes too (large bodies stay undecoded, counted)."""
    from pdp_observe.hub import LATE_DECODE_MAX_LOAD
    from pdp_observe.recording import build_recording

    settings = make_settings("http://127.0.0.1:9", tmp_path / "c.db")
    rec = build_recording(settings).recorder
    rec.defer_backlog, rec.batch_max = -1, 100
    big = _engine_capture(99)
    big.resp_body = big.resp_body + b" " * 200_000
    big.resp_size = len(big.resp_body)
    rec.defer_max_bytes = 100_000
    rec.process([_engine_capture(i) for i in range(6)] + [big])
    assert (rec.decode_deferred, rec.undecoded) == (7, 1)  # the 200 kB one is not held
    rec._load_window = 0.2
    rec._window_start, rec._window_busy = time.monotonic(), 0.15  # 75 % busy in this window
    time.sleep(0.25)
    assert rec._current_load() > LATE_DECODE_MAX_LOAD
    rec.start()
    time.sleep(0.1)  # the worker runs, but its last second was busy: nothing decoded yet
    assert rec.decoded_late == 0
    deadline = time.monotonic() + 5
    while rec.decoded_late < 6:  # an idle window later it catches up
        assert time.monotonic() < deadline, "deferred exchanges never decoded"
        time.sleep(0.05)
    rec.stop()
    rows = list(StoreReader(settings.db).iter_all())
    assert len(rows) == 7 and sum(r.model is None for r in rows) == 1
    assert rec._deferred_bytes == 0


def test_packed_frames_are_bounded_whole_and_unpacked_by_the_worker(tmp_path):
    """The recorder process queues pipe frames still pickled: the queue bounds apply to the
    counts the frame declares, a frame that does not fit is dropped whole (counted), a
    frame that cannot be unpacked costs its own captures, and the rest is stored."""
    from pdp_observe.link import capture_frame, decode_captures, split_captures

    w = StoreWriter(str(tmp_path / "p.db"))
    rec = Recorder(w, redactor=Redactor(), body_limit=1 << 20, queue_max=25)

    def submit(batch: list[RawCapture]) -> None:
        payload = capture_frame(batch)[5:]  # past the frame header, as FrameReader hands it on
        count, body_bytes, packed = split_captures(payload)
        assert (count, body_bytes) == (len(batch), sum(len(r.req_body) + len(r.resp_body) for r in batch))
        rec.submit_packed(packed, count, body_bytes, decode_captures)

    submit([raw(i) for i in range(10)])
    submit([raw(i) for i in range(10, 20)])
    submit([raw(i) for i in range(20, 30)])  # 20 + 10 > 25: dropped whole
    rec.submit_packed(b"not a pickle", 3, 30, decode_captures)  # fits (23), cannot be unpacked
    assert rec.queue_depth == 23 and rec.dropped() == {"queue_full": 10}
    rec.batch_max = 15
    stored = []
    while batch := rec._take_batch():
        stored += rec.process(batch)
    assert rec.queue_depth == 0
    assert sorted(int(ex.request.path.split("=")[1]) for ex in stored) == list(range(20))
    assert rec.dropped() == {"queue_full": 10, "process_error": 3}
    rec.stop()
    reader = StoreReader(str(tmp_path / "p.db"))
    assert reader.count() == 20


def test_show_takes_the_digits_ls_prints_a_prefix_or_the_whole_id(tmp_path):
    db = str(tmp_path / "ids.db")
    rec = Recorder(StoreWriter(db), redactor=Redactor(), body_limit=1024)
    exchanges = rec.process([raw(i) for i in range(40)])
    rec.writer.close()
    ids = [ex.id for ex in exchanges]
    table = run_cli("ls", "--db", db, "--last", "3").stdout.splitlines()
    for line, ex_id in zip(table[1:4], ids[-3:]):
        short = line.split()[0]
        assert ex_id.endswith(short)
        shown = run_cli("show", "--db", db, short)
        assert shown.returncode == 0 and f"exchange {ex_id}" in shown.stdout
    reader = StoreReader(db)
    assert reader.resolve(ids[7]) == ids[7] and reader.resolve(ids[7][-6:]) == ids[7]
    shared = os.path.commonprefix([ids[0], ids[-1]])  # recorded in the same moment: a prefix names them all
    assert len(shared) >= 8
    vague = run_cli("show", "--db", db, shared)
    assert vague.returncode == 2 and "ambiguous" in vague.stderr and "type more digits" in vague.stderr
    missing = run_cli("show", "--db", db, "ffff0000ffff")
    assert missing.returncode == 2 and "no exchange" in missing.stderr


def test_rows_after_the_first_captures_use_a_trained_dictionary_and_read_back_exactly(tmp_path):
    """After ``train_after`` blobs the writer trains a zstd dictionary on them (redacted, as
    everything it stores): later rows shrink, every row reads back byte for byte, the
    dictionary holds no secret, and a batch that never got committed cannot strand rows
    compressed with it (each batch carries it)."""
    db = str(tmp_path / "d.db")
    w = StoreWriter(db)
    w._samples, w._train_after = [], 60  # ~20 exchanges (record + bodies) instead of ~1,000
    rec = Recorder(w, redactor=Redactor(), body_limit=1 << 20)

    def cap(i: int) -> RawCapture:
        body = (b'{"modelName":"User","action":"findMany","query":{"arguments":{"where":{"email":'
                b'"user%d@example.test","token":"tok-SECRET-%d"},"take":%d},"selection":{"$scalars":true}}}'
                % (i, i, i % 7))
        c = raw(i, body=body)
        c.req_headers = [(b"Content-Type", b"application/json"), (b"Authorization", b"Bearer SECRET-%d" % i)]
        c.resp_body = b'{"data":{"findManyUser":[{"id":%d,"email":"user%d@example.test"}]}}' % (i, i)
        c.resp_size = len(c.resp_body)
        return c

    rec.process([cap(i) for i in range(20)])
    assert w._dict_row is not None, "no dictionary trained"
    w.rows([build_exchange(cap(99), Redactor(), 1 << 20)])  # a batch built, never committed (disk full)
    rec.process([cap(i) for i in range(20, 40)])
    w.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM zstd_dicts").fetchone()[0] == 1
    sizes = [len(a) + len(b) + len(c) for a, b, c in conn.execute(
        "SELECT record, req_body, resp_body FROM exchanges ORDER BY seq")]
    conn.close()
    assert sum(sizes[20:]) < 0.7 * sum(sizes[:20])
    reader = StoreReader(db)
    for i in range(40):
        (row,) = [r for r in reader.iter_all() if r.path == f"/q?i={i}"]
        ex = reader.get(row.id)
        assert ex.request.body.data == Redactor().body(cap(i).req_body)
        assert b"SECRET" not in ex.request.body.data
        assert ex.response.body.data == cap(i).resp_body
        assert dict(ex.request.headers)["Authorization"].startswith("Bearer [REDACTED:")
    raw_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("d.db*"))
    assert b"SECRET" not in raw_bytes
