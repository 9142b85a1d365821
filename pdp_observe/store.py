"""The SQLite capture store: schema and forward migrations, batched writes, queries, retention.

One writer (the capture worker thread) owns a connection and commits in batches; readers
(CLI, TUI, export) open their own connections, which WAL lets run beside the writer.
Indexed columns hold what people filter and sort on; the whole :class:`Exchange` is kept as
zstd-compressed JSON so that fields added by later capabilities need no new table.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import orjson
import zstandard

from .exchange import Exchange, exchange_from_dict, operation_from_dict
from .filterlang import ERROR_MESSAGE_MAX, SQL_TEXT_MAX, FilterError, compile_filter

SCHEMA_VERSION = 6

log = logging.getLogger("pdp_observe.store")

# Forward-only migrations: (version, name, SQL). Never edit a released one; append a new one.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "exchanges", """
        CREATE TABLE exchanges (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            ts REAL NOT NULL,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            status INTEGER,
            duration_ms REAL,
            req_bytes INTEGER NOT NULL,
            resp_bytes INTEGER,
            failure TEXT,
            truncated INTEGER NOT NULL DEFAULT 0,
            record BLOB NOT NULL,
            req_body BLOB,
            resp_body BLOB
        );
        CREATE INDEX ix_exchanges_ts ON exchanges(ts);
        CREATE INDEX ix_exchanges_status ON exchanges(status);
        CREATE INDEX ix_exchanges_duration ON exchanges(duration_ms);
        CREATE INDEX ix_exchanges_path ON exchanges(path);
    """),
    (2, "counters", """
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL DEFAULT 0);
    """),
    (3, "decoded operations and transactions", """
        ALTER TABLE exchanges ADD COLUMN protocol TEXT;
        ALTER TABLE exchanges ADD COLUMN kind TEXT;
        ALTER TABLE exchanges ADD COLUMN model TEXT;
        ALTER TABLE exchanges ADD COLUMN action TEXT;
        ALTER TABLE exchanges ADD COLUMN fingerprint TEXT;
        ALTER TABLE exchanges ADD COLUMN txn TEXT;
        ALTER TABLE exchanges ADD COLUMN error_code TEXT;
        ALTER TABLE exchanges ADD COLUMN sql_count INTEGER;
        CREATE INDEX ix_exchanges_model_action ON exchanges(model, action);
        CREATE INDEX ix_exchanges_fingerprint ON exchanges(fingerprint);
        CREATE INDEX ix_exchanges_txn ON exchanges(txn) WHERE txn IS NOT NULL;
        CREATE INDEX ix_exchanges_error_code ON exchanges(error_code) WHERE error_code IS NOT NULL;
        CREATE TABLE transactions (
            txn TEXT PRIMARY KEY,
            protocol TEXT,
            started REAL,
            ended REAL,
            duration_ms REAL,
            query_count INTEGER NOT NULL DEFAULT 0,
            outcome TEXT NOT NULL,
            isolation_level TEXT,
            error_code TEXT,
            start_seen INTEGER NOT NULL DEFAULT 1,
            exchange_ids TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX ix_transactions_started ON transactions(started);
    """),
    (4, "engine correlation: telemetry, pressure snapshots, pool samples, received spans", """
        ALTER TABLE exchanges ADD COLUMN engine_ms REAL;
        ALTER TABLE exchanges ADD COLUMN trace_id TEXT;
        CREATE TABLE pressure (
            exchange_id TEXT PRIMARY KEY,
            ts REAL NOT NULL,
            trigger TEXT NOT NULL,
            data BLOB NOT NULL
        );
        CREATE INDEX ix_pressure_ts ON pressure(ts);
        CREATE TABLE pool_samples (
            seq INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            upstream TEXT,
            data BLOB NOT NULL
        );
        CREATE INDEX ix_pool_samples_ts ON pool_samples(ts);
        CREATE TABLE otel_spans (
            seq INTEGER PRIMARY KEY,
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            ts REAL NOT NULL,
            data BLOB NOT NULL
        );
        CREATE INDEX ix_otel_spans_trace ON otel_spans(trace_id);
        CREATE INDEX ix_otel_spans_ts ON otel_spans(ts);
    """),
    # What the filter language's sql: and text: search, as plain columns (the record is
    # compressed JSON, which SQL cannot look into). Rows written before v5 keep NULL here.
    (5, "search columns for the filter language", """
        ALTER TABLE exchanges ADD COLUMN sql_text TEXT;
        ALTER TABLE exchanges ADD COLUMN error_message TEXT;
    """),
    # zstd dictionaries the writer trained on the first captures of a session (see
    # RowBuilder): a blob compressed with one names its id in the zstd frame header.
    (6, "zstd dictionaries", """
        CREATE TABLE zstd_dicts (id INTEGER PRIMARY KEY, created REAL NOT NULL, data BLOB NOT NULL);
    """),
]

LIST_COLUMNS = ("id", "ts", "method", "path", "status", "duration_ms", "req_bytes",
                "resp_bytes", "failure", "truncated", "protocol", "kind", "model", "action",
                "fingerprint", "txn", "error_code", "sql_count", "engine_ms", "trace_id")
_DECODED_COLUMNS = ("record", "protocol", "kind", "model", "action", "fingerprint", "txn", "error_code",
                    "sql_count", "engine_ms", "trace_id", "sql_text", "error_message")
_INSERT = ("INSERT INTO exchanges (id, ts, method, path, status, duration_ms, req_bytes, resp_bytes, "
           "failure, truncated, record, req_body, resp_body, " + ", ".join(_DECODED_COLUMNS[1:]) + ") "
           "VALUES (" + ",".join("?" * 25) + ")")
_UPDATE_DECODED = ("UPDATE exchanges SET " + ", ".join(f"{c} = ?" for c in _DECODED_COLUMNS)
                   + " WHERE id = ?")


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PACK_MIN = 512  # below this, zstd's per-call cost outweighs the bytes it saves
DICT_PACK_MIN = 64  # with a dictionary even short bodies shrink (a 129-byte answer to ~40)
DICT_TRAIN_SAMPLES = 3000  # blobs (records and bodies: ~1,000 exchanges) a dictionary is trained on
DICT_SIZE = 32 * 1024
DICT_SAMPLE_MAX = 16 * 1024  # a large body says little about the next small one, and costs memory
DICT_K, DICT_D = 256, 8  # fixed cover parameters: training takes ~0.1 s instead of searching for seconds


def unpack(blob: bytes, zd: "Unpacker | zstandard.ZstdDecompressor") -> bytes:
    """Stored blobs are zstd frames, or raw bytes when small (told apart by zstd's magic)."""
    return zd.decompress(blob) if blob[:4] == _ZSTD_MAGIC else blob


class Unpacker:
    """Decompresses the store's zstd frames, with the dictionary a frame names when it has one
    (loaded from ``zstd_dicts`` on first use, then kept)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._plain = zstandard.ZstdDecompressor()
        self._by_dict: dict[int, zstandard.ZstdDecompressor] = {}

    def decompress(self, blob: bytes) -> bytes:
        dict_id = zstandard.get_frame_parameters(blob).dict_id
        if not dict_id:
            return self._plain.decompress(blob)
        zd = self._by_dict.get(dict_id)
        if zd is None:
            row = self.conn.execute("SELECT data FROM zstd_dicts WHERE id = ?", (dict_id,)).fetchone()
            if row is None:
                raise StoreError(f"a stored blob needs zstd dictionary {dict_id}, which is not in the file")
            zd = self._by_dict[dict_id] = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(row[0]))
        return zd.decompress(blob)


def match_ids(conn: sqlite3.Connection, typed: str, limit: int = 6) -> list[str]:
    """The exchange ids a typed reference names: the whole id, a prefix of it, or its last
    digits (what tables print, see :func:`pdp_observe.exchange.short_id`).

    Ids are time-ordered, so their first digits are shared by everything recorded in the same
    seconds and the last ones tell exchanges apart. A prefix is an index range; a suffix scans
    the id index (~80 ms per million rows), which only a typed short id pays.
    ``ValueError`` when the text cannot be an id.
    """
    p = (typed or "").strip().lower()
    if not p or any(c not in "0123456789abcdef" for c in p):
        raise ValueError(f"{typed!r} is not an exchange id (hex digits, as `ls` shows)")
    if conn.execute("SELECT 1 FROM exchanges WHERE id = ?", (p,)).fetchone():
        return [p]
    ids = [i for (i,) in conn.execute(
        "SELECT id FROM exchanges WHERE id >= ? AND id < ? LIMIT ?", (p, p + "g", limit))]
    for (i,) in conn.execute("SELECT id FROM exchanges WHERE id GLOB ? LIMIT ?", ("*" + p, limit)):
        if i not in ids:
            ids.append(i)
    return ids


def ambiguous_message(typed: str, ids: list[str]) -> str:
    return f"id {typed!r} is ambiguous ({', '.join(ids[:5])}...): type more digits"


class StoreError(Exception):
    """A store problem a person can act on (missing file, newer schema, ...)."""


def classify_sqlite_error(exc: BaseException) -> str:
    """Map a write failure to a drop reason shown to users (disk_full, locked, read_only...)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):  # the store process knew (store_down)
        return reason
    msg = str(exc).lower()
    if "full" in msg:
        return "disk_full"
    if "locked" in msg or "busy" in msg:
        return "locked"
    if "readonly" in msg or "read-only" in msg:
        return "read_only"
    return "write_error"


def _connect(path: str, *, timeout: float = 5.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
    return conn


def migrate(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> int:
    """Apply pending migrations up to ``upto``; returns the resulting version."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                 "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
    current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise StoreError(f"capture file has schema v{current}, newer than this pdp_observe "
                         f"(v{SCHEMA_VERSION}); upgrade pdp_observe to read it")
    for version, name, sql in MIGRATIONS:
        if current < version <= upto:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in filter(str.strip, sql.split(";")):
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time.time()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            current = version
    return current


def open_db(path: str, *, create: bool) -> sqlite3.Connection:
    if not create and not os.path.exists(path):
        raise StoreError(f"no capture file at {path!r} (start `pdp-observe proxy --db {path}` first)")
    fresh = not os.path.exists(path) or os.path.getsize(path) == 0
    try:
        conn = _connect(path)
        if fresh:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # lets retention give space back
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open capture file {path!r}: {exc}") from None
    return conn


WAL_CHECKPOINT_PAGES = 16000


class RowBuilder:
    """Exchanges and records → the rows the store inserts, compression included.

    Kept apart from the connection so that rows can be built in one process and committed
    in another (:mod:`pdp_observe.store_process`): building is Python and zstd, committing is
    SQLite, and on a small machine the two then run on different cores at once.
    """

    def __init__(self, *, train_after: int = DICT_TRAIN_SAMPLES) -> None:
        self._zc = zstandard.ZstdCompressor(level=1)
        # A zstd dictionary trained on this session's first captures: one exchange's record and
        # bodies share most of their bytes with the ones before it (header names, JSON keys,
        # the same queries), which a dictionary lets zstd reference. Rows then shrink and
        # SQLite, whose cost per row follows its bytes, writes fewer pages.
        self._dict_zc: zstandard.ZstdCompressor | None = None
        self._dict_row: tuple[int, float, bytes] | None = None
        self._samples: list[bytes] | None = [] if train_after > 0 else None
        self._train_after = train_after

    def _pack(self, data: bytes) -> bytes:
        zc = self._dict_zc
        if zc is not None:
            return zc.compress(data) if len(data) >= DICT_PACK_MIN or data[:4] == _ZSTD_MAGIC else data
        if self._samples is not None and DICT_PACK_MIN <= len(data) <= DICT_SAMPLE_MAX:
            self._samples.append(data)
        return self._plain_pack(data)

    def _plain_pack(self, data: bytes) -> bytes:
        if len(data) < PACK_MIN and data[:4] != _ZSTD_MAGIC:
            return data
        return self._zc.compress(data)

    def _maybe_train(self) -> None:
        """Train once enough samples are in; a failed training (too few distinct samples)
        waits for as many more, then gives up: rows are compressed without a dictionary."""
        samples = self._samples
        if samples is None or len(samples) < self._train_after:
            return
        self._samples = None
        try:
            d = zstandard.train_dictionary(DICT_SIZE, samples, k=DICT_K, d=DICT_D,
                                           dict_id=random.randrange(1 << 16, 1 << 31))
            d.precompute_compress(level=1)
        except zstandard.ZstdError as exc:
            log.info("no zstd dictionary from %d samples (%s); compressing without one", len(samples), exc)
            return
        self._dict_zc = zstandard.ZstdCompressor(level=1, dict_data=d)
        self._dict_row = (d.dict_id(), time.time(), d.as_bytes())

    def _row(self, ex: Exchange) -> tuple[Any, ...]:
        z = self._pack
        resp = ex.response
        record, *decoded = self._decoded_cols(ex)
        return (
            ex.id, ex.timings.received, ex.request.method, ex.request.path,
            resp.status if resp else None, ex.timings.duration_ms,
            ex.request.body.size, resp.body.size if resp else None,
            ex.failure, int(ex.truncated), record,
            z(ex.request.body.data) if ex.request.body.data else None,
            z(resp.body.data) if resp and resp.body.data else None,
            *decoded,
        )

    def _decoded_cols(self, ex: Exchange, pack: Any = None) -> tuple[Any, ...]:
        """The record and the columns decoding fills (also rewritten by :meth:`update_decoded`)."""
        op = ex.operation
        return (
            (pack or self._pack)(orjson.dumps(ex.to_dict(), option=orjson.OPT_NON_STR_KEYS)),
            *((op.protocol, op.kind, op.model, op.action, op.fingerprint, op.txn, op.error_code,
               len(op.sql)) if op is not None else (None,) * 8),
            ex.engine_ms, ex.trace_id,
            sql_text(op.sql) if op is not None and op.sql else None,
            op.error_message[:ERROR_MESSAGE_MAX] if op is not None and op.error_message else None,
        )

    def rows(self, exchanges: Iterable[Exchange], records: Iterable[Any] = ()) -> tuple[list[tuple[Any, ...]], Extra]:
        """Exchange rows, and the records processors made beside them grouped by kind.

        Records are told apart by their ``store_kind`` (transactions, pressure snapshots,
        pool samples, received spans), so a processor can add one without the writer
        knowing the processor.
        """
        extra: Extra = {}
        for rec in records:
            if isinstance(rec, tuple):  # (kind, object) for records of other modules' types
                kind, rec = rec
            else:
                kind = getattr(rec, "store_kind", "transaction")
            extra.setdefault(kind, []).append(_RECORD_ROWS[kind](rec, self._pack))
        rows = [self._row(ex) for ex in exchanges]
        if self._dict_row is not None:
            # with every batch (INSERT OR IGNORE: a lookup once it is in): a row compressed with
            # the dictionary is never committed without it, whichever commit failed before
            extra["zstd_dict"] = [self._dict_row]
        self._maybe_train()
        return rows, extra

    def decoded_rows(self, exchanges: Iterable[Exchange]) -> list[tuple[Any, ...]]:
        """Rewritten records are compressed without the dictionary: an update carries no
        dictionary row, and its exchange's own row may have been committed before there was one."""
        pack = self._plain_pack
        return [(*self._decoded_cols(ex, pack), ex.id) for ex in exchanges]


Extra = dict[str, list[tuple[Any, ...]]]

WRITER_CACHE_KIB = 32 * 1024
"""The writer's page cache (SQLite's default is 2 MiB). The duration index takes its inserts
at random places, so past ~100k rows its leaves no longer fit the default cache and each
insert re-reads one: at 200k rows 32 MiB took SQLite from ~24.5 to ~19.5 µs per row."""


class StoreWriter(RowBuilder):
    """The single writer. Not thread-safe by design: only the capture worker calls it."""

    asynchronous = False

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.conn = open_db(path, create=True)
        # Checkpoint every ~64 MiB of WAL instead of SQLite's 4 MiB: the pages each commit
        # rewrites (index leaves, the table's last pages) are copied into the file once per
        # checkpoint, so fewer checkpoints copy them fewer times (~20 % less CPU per stored
        # row at 200k rows). The limit keeps the WAL file from staying at its high-water size.
        self.conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        self.conn.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
        self.conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")

    def update_decoded(self, exchanges: Iterable[Exchange]) -> None:
        """Rewrite the decoded part of rows stored before they were decoded (one commit).

        Rows pruned in the meantime are simply not found.
        """
        self.commit_updates(self.decoded_rows(exchanges))

    def commit_updates(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        conn = self.conn
        conn.execute("BEGIN")
        try:
            conn.executemany(_UPDATE_DECODED, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def write(self, exchanges: Iterable[Exchange], records: Iterable[Any] = ()) -> int:
        """Insert exchanges and the records processors made beside them, in one commit."""
        return self.commit(*self.rows(exchanges, records))

    def commit(self, rows: list[tuple[Any, ...]], extra: Extra) -> int:
        if not rows and not extra:
            return 0
        conn = self.conn
        conn.execute("BEGIN")
        try:
            conn.executemany(_INSERT, rows)
            for kind, krows in extra.items():
                conn.executemany(_RECORD_SQL[kind], krows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return len(rows)

    def add_counters(self, deltas: dict[str, int]) -> None:
        items = [(k, v) for k, v in deltas.items() if v]
        if not items:
            return
        self.conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", items)

    def used_bytes(self) -> int:
        c = self.conn
        pages = c.execute("PRAGMA page_count").fetchone()[0] - c.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * c.execute("PRAGMA page_size").fetchone()[0]

    def prune(self, *, max_age: float = 0.0, max_bytes: int = 0, now: float | None = None) -> dict[str, int]:
        """Delete the oldest captures past the age or size limit; returns counts by reason."""
        pruned = {"age": 0, "size": 0}
        conn = self.conn
        if max_age > 0:
            cutoff = (time.time() if now is None else now) - max_age
            pruned["age"] = conn.execute("DELETE FROM exchanges WHERE ts < ?", (cutoff,)).rowcount
        if max_bytes > 0:
            while self.used_bytes() > max_bytes:
                total = conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0]
                if total == 0:
                    break
                # Delete a tenth at a time: few passes, and never everything for a small overshoot.
                n = max(1, total // 10)
                pruned["size"] += conn.execute(
                    "DELETE FROM exchanges WHERE seq IN (SELECT seq FROM exchanges ORDER BY ts, seq LIMIT ?)",
                    (n,)).rowcount
        if pruned["age"] or pruned["size"]:
            oldest = conn.execute("SELECT MIN(ts) FROM exchanges").fetchone()[0]
            cutoff = oldest if oldest is not None else float("inf")
            for table in ("pressure", "pool_samples", "otel_spans"):
                conn.execute(f"DELETE FROM {table} WHERE ts < ?", (cutoff,))
            conn.execute("PRAGMA incremental_vacuum")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return pruned

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            self.conn.close()


def sql_text(statements: Iterable[Any]) -> str:
    """The ``sql_text`` column: the statements joined by newlines, at most SQL_TEXT_MAX
    characters (stops joining once past it: a plan can carry thousands of statements)."""
    parts: list[str] = []
    size = 0
    for s in statements:
        parts.append(s.sql)
        size += len(s.sql) + 1
        if size >= SQL_TEXT_MAX:
            break
    return "\n".join(parts)[:SQL_TEXT_MAX]


def filter_row(ex: Exchange) -> dict[str, Any]:
    """An exchange as the ``exchanges`` columns the filter language reads, for
    :meth:`CompiledFilter.matches` on exchanges not read back from the store (live feeds)."""
    op = ex.operation
    resp = ex.response
    row: dict[str, Any] = {
        "id": ex.id, "ts": ex.timings.received, "method": ex.request.method, "path": ex.request.path,
        "status": resp.status if resp else None, "duration_ms": ex.timings.duration_ms,
        "req_bytes": ex.request.body.size, "resp_bytes": resp.body.size if resp else None,
        "failure": ex.failure, "truncated": int(ex.truncated), "engine_ms": ex.engine_ms,
        "trace_id": ex.trace_id,
    }
    if op is None:
        row.update(dict.fromkeys(("protocol", "kind", "model", "action", "fingerprint", "txn",
                                  "error_code", "sql_count", "sql_text", "error_message")))
    else:
        row.update(protocol=op.protocol, kind=op.kind, model=op.model, action=op.action,
                   fingerprint=op.fingerprint, txn=op.txn, error_code=op.error_code,
                   sql_count=len(op.sql), sql_text=sql_text(op.sql) if op.sql else None,
                   error_message=op.error_message[:ERROR_MESSAGE_MAX] if op.error_message else None)
    return row


_TX_COLUMNS = ("txn", "protocol", "started", "ended", "duration_ms", "query_count", "outcome",
               "isolation_level", "error_code", "start_seen", "exchange_ids")
# A transaction seen again (more queries, its end) replaces its row; a record rebuilt after a
# restart (start not seen) must not erase what the first one knew.
_TX_UPSERT = (
    f"INSERT INTO transactions ({', '.join(_TX_COLUMNS)}) VALUES ({','.join('?' * len(_TX_COLUMNS))}) "
    "ON CONFLICT(txn) DO UPDATE SET ended = excluded.ended, duration_ms = "
    "CASE WHEN excluded.start_seen THEN excluded.duration_ms ELSE (excluded.ended - started) * 1000 END, "
    "query_count = CASE WHEN excluded.start_seen THEN excluded.query_count "
    "ELSE query_count + excluded.query_count END, outcome = excluded.outcome, "
    "error_code = COALESCE(excluded.error_code, error_code), "
    "exchange_ids = CASE WHEN excluded.start_seen THEN excluded.exchange_ids ELSE "
    "(SELECT json_group_array(value) FROM (SELECT value FROM json_each(transactions.exchange_ids) "
    "UNION ALL SELECT value FROM json_each(excluded.exchange_ids))) END"
)


def _tx_row(t: Any, _pack: Any = None) -> tuple[Any, ...]:
    return (t.txn, t.protocol, t.started, t.ended, t.duration_ms, t.query_count, t.outcome,
            t.isolation_level, t.error_code, int(t.start_seen), json.dumps(t.exchange_ids))


def _json_blob(data: Any, pack: Any) -> bytes:
    return pack(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))


_RECORD_SQL = {
    "zstd_dict": "INSERT OR IGNORE INTO zstd_dicts (id, created, data) VALUES (?, ?, ?)",
    "transaction": _TX_UPSERT,
    "pressure": "INSERT OR REPLACE INTO pressure (exchange_id, ts, trigger, data) VALUES (?, ?, ?, ?)",
    "pool_sample": "INSERT INTO pool_samples (ts, upstream, data) VALUES (?, ?, ?)",
    "otel_span": "INSERT INTO otel_spans (trace_id, span_id, ts, data) VALUES (?, ?, ?, ?)",
}
_RECORD_ROWS = {
    "transaction": _tx_row,
    "pressure": lambda r, pack: (r.exchange_id, r.at, r.trigger, _json_blob(r.data, pack)),
    "pool_sample": lambda r, pack: (r.t, getattr(r, "upstream", None), _json_blob(r.to_dict(), pack)),
    "otel_span": lambda r, pack: (r.trace_id, r.span_id, r.start, _json_blob(r.to_dict(), pack)),
}


@dataclass(slots=True)
class ListRow:
    """What ``ls`` shows per exchange: the indexed columns, no bodies."""

    id: str
    ts: float
    method: str
    path: str
    status: int | None
    duration_ms: float | None
    req_bytes: int
    resp_bytes: int | None
    failure: str | None
    truncated: bool
    protocol: str | None = None
    kind: str | None = None
    model: str | None = None
    action: str | None = None
    fingerprint: str | None = None
    txn: str | None = None
    error_code: str | None = None
    sql_count: int | None = None
    engine_ms: float | None = None
    trace_id: str | None = None


@dataclass(slots=True)
class Filter:
    """``ls`` filters; each set field narrows the result (all must hold)."""

    model: str | None = None
    action: str | None = None
    status: str | None = None  # "500", ">=400", "4xx"
    code: str | None = None
    min_ms: float | None = None
    txn: str | None = None  # id or prefix
    expr: str | None = None  # the filter language (pdp_observe.filterlang), ANDed with the rest

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if self.expr and self.expr.strip():
            try:
                compiled = compile_filter(self.expr)
            except FilterError as exc:
                raise StoreError(f"filter error at {exc.position}: {exc.message}") from None
            sql, p = compiled.sql()
            clauses.append(sql)
            params += p
        # exact (index-friendly) matches: Prisma names are case-sensitive, codes are upper-case
        for col, value in (("model", self.model), ("action", self.action),
                           ("error_code", self.code.upper() if self.code else None)):
            if value:
                clauses.append(f"{col} = ?")
                params.append(value)
        if self.txn:
            clauses.append("txn >= ? AND txn < ?")
            params += [self.txn, self.txn + "\uffff"]
        if self.min_ms is not None:
            clauses.append("duration_ms >= ?")
            params.append(self.min_ms)
        if self.status:
            sql, p = status_clause(self.status)
            clauses.append(sql)
            params += p
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def status_clause(text: str) -> tuple[str, list[Any]]:
    """``"500"`` / ``">=400"`` / ``"4xx"`` → SQL on the status column."""
    t = text.strip().lower()
    if len(t) == 3 and t[0].isdigit() and t[1:] == "xx":
        base = int(t[0]) * 100
        return "status >= ? AND status < ?", [base, base + 100]
    for op in (">=", "<=", "!=", ">", "<", "="):
        if t.startswith(op) and t[len(op):].strip().isdigit():
            return f"status {op} ?", [int(t[len(op):])]
    if t.isdigit():
        return "status = ?", [int(t)]
    raise StoreError(f"--status {text!r}: use 500, >=400, <300 or 4xx")


class StoreReader:
    """Read side for the CLI (and later TUI/export): queries never block the writer."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = open_db(path, create=False)
        self._zd = Unpacker(self.conn)

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0]

    def last(self, n: int, flt: Filter | None = None) -> list[ListRow]:
        """The newest ``n`` matching exchanges (``0`` = all), oldest first (like ``tail``)."""
        where, params = (flt or Filter()).where()
        cols = ", ".join(LIST_COLUMNS)
        limit = " LIMIT ?" if n else ""
        rows = self.conn.execute(f"SELECT {cols} FROM exchanges{where} ORDER BY ts DESC, seq DESC{limit}",
                                 [*params, n] if n else params).fetchall()
        return [_list_row(r) for r in reversed(rows)]

    def iter_all(self) -> Iterator[ListRow]:
        cols = ", ".join(LIST_COLUMNS)
        for r in self.conn.execute(f"SELECT {cols} FROM exchanges ORDER BY ts, seq"):
            yield _list_row(r)

    def operation(self, ex_id: str) -> Any:
        """The decoded Operation of one exchange (from its record), or None."""
        row = self.conn.execute("SELECT record FROM exchanges WHERE id = ?", (ex_id,)).fetchone()
        if row is None:
            return None
        return operation_from_dict(json.loads(unpack(row[0], self._zd)).get("operation"))

    def transaction(self, txn: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {', '.join(_TX_COLUMNS)} FROM transactions WHERE txn = ?",
                                (txn,)).fetchone()
        if row is None:
            return None
        out = dict(zip(_TX_COLUMNS, row))
        out["exchange_ids"] = json.loads(out["exchange_ids"])
        out["start_seen"] = bool(out["start_seen"])
        return out

    def transactions(self) -> list[dict[str, Any]]:
        return [t for (txn,) in self.conn.execute("SELECT txn FROM transactions ORDER BY started")
                if (t := self.transaction(txn)) is not None]

    def record(self, ex_id: str) -> dict[str, Any] | None:
        """The stored record of one exchange (no bodies), or None."""
        row = self.conn.execute("SELECT record FROM exchanges WHERE id = ?", (ex_id,)).fetchone()
        return None if row is None else json.loads(unpack(row[0], self._zd))

    def pressure(self, ex_id: str) -> dict[str, Any] | None:
        """The pressure snapshot taken at this exchange (written after it, see correlate.py)."""
        row = self.conn.execute("SELECT data FROM pressure WHERE exchange_id = ?", (ex_id,)).fetchone()
        return None if row is None else json.loads(unpack(row[0], self._zd))

    def pool_samples(self, since: float = 0.0, until: float = float("inf")) -> list[dict[str, Any]]:
        return [json.loads(unpack(d, self._zd)) for (d,) in self.conn.execute(
            "SELECT data FROM pool_samples WHERE ts >= ? AND ts <= ? ORDER BY ts", (since, until))]

    def spans_for_trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Spans received over OTLP (engines with --enable-open-telemetry) for one trace."""
        return [json.loads(unpack(d, self._zd)) for (d,) in self.conn.execute(
            "SELECT data FROM otel_spans WHERE trace_id = ? ORDER BY ts", (trace_id,))]

    def counters(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT name, value FROM counters").fetchall())

    def resolve(self, prefix: str) -> str:
        """Full id for what a person typed; a clear error when none or several match."""
        try:
            ids = match_ids(self.conn, prefix)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        if not ids:
            raise StoreError(f"no exchange with id {prefix!r} in {self.path}")
        if len(ids) > 1:
            raise StoreError(ambiguous_message(prefix, ids))
        return ids[0]

    def get(self, prefix: str) -> Exchange:
        ex_id = self.resolve(prefix)
        rec, req_body, resp_body = self.conn.execute(
            "SELECT record, req_body, resp_body FROM exchanges WHERE id = ?", (ex_id,)).fetchone()
        data = json.loads(unpack(rec, self._zd))
        return exchange_from_dict(
            data,
            unpack(req_body, self._zd) if req_body else b"",
            unpack(resp_body, self._zd) if resp_body else b"",
        )

    def check(self) -> list[str]:
        """Problems found (empty = healthy): SQLite integrity and the schema version."""
        problems = [r[0] for r in self.conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
        version = self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        if version != SCHEMA_VERSION:
            problems.append(f"schema version {version}, expected {SCHEMA_VERSION}")
        return problems

    def close(self) -> None:
        self.conn.close()


def _list_row(r: tuple[Any, ...]) -> ListRow:
    values = list(r)
    values[9] = bool(values[9])
    return ListRow(*values)
