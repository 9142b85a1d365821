"""The hand-off between the hot path and everything else: a bounded queue and one worker thread.

``submit`` is the only thing the proxy calls per exchange; it is a length check and a deque
append. When the queue is over its count or byte budget the capture is dropped and counted,
never waited for. The worker turns raw captures into exchanges, runs the processors
(decoding, enrichment), writes a batch to the store and hands it to the sinks. A failing
store or sink costs captures (counted by reason), never traffic.

Counters that both threads touch are split by writer (the loop thread owns ``_in_*`` and
``queue_full``; the worker owns the rest) so no lock is needed on the request path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Protocol

from .capture import RawCapture, build_exchange
from .exchange import Exchange
from .redact import Redactor
from .store import StoreWriter, classify_sqlite_error

log = logging.getLogger("pdp_observe.hub")

Processor = Callable[[list[Exchange]], "list[Any] | None"]
"""Fills fields on a batch's exchanges; may return extra records (transactions) to store."""


class _Packed:
    """Captures as they came through the pipe, with the counts the queue bounds need."""

    __slots__ = ("packed", "count", "body_bytes", "unpack")

    def __init__(self, packed: bytes, count: int, body_bytes: int,
                 unpack: Callable[[bytes], list[RawCapture]]) -> None:
        self.packed, self.count, self.body_bytes, self.unpack = packed, count, body_bytes, unpack


LATE_DECODE_MAX_LOAD = 0.5


def _held_bytes(ex: Exchange) -> int:
    return len(ex.request.body.data) + (len(ex.response.body.data) if ex.response is not None else 0)


class Sink(Protocol):
    name: str

    def handle(self, exchanges: list[Exchange]) -> None: ...


class Recorder:
    """Bounded capture queue + worker thread that processes, stores and fans out batches."""

    def __init__(self, writer: StoreWriter | None, *, redactor: Redactor, body_limit: int,
                 queue_max: int = 10000, queue_max_bytes: int = 64 * 1024**2,
                 max_age: float = 0.0, max_db_size: int = 0, prune_every: float = 10.0,
                 batch_max: int = 2000, idle_wait: float = 0.02) -> None:
        self.writer = writer
        self.redactor = redactor
        self.body_limit = body_limit
        self.queue_max = queue_max
        self.queue_max_bytes = queue_max_bytes
        self.max_age = max_age
        self.max_db_size = max_db_size
        self.prune_every = prune_every
        self.batch_max = batch_max
        self.idle_wait = idle_wait
        self.processors: list[Processor] = []
        self.sinks: list[Sink] = []
        self._q: deque[RawCapture | _Packed] = deque()
        # loop-thread-owned
        self._in_count = 0
        self._in_bytes = 0
        self.dropped_queue_full = 0
        # what the proxy process reports when recording runs in its own process (see link.py)
        self.remote_dropped: dict[str, int] = {}
        self.remote_in_flight = 0
        self.remote_high_water = 0
        self.remote_active: list[dict[str, Any]] = []
        # records made outside the worker (pool samples, received spans), stored with the next batch
        self._records: deque[Any] = deque()
        self.records_max = 10000
        self.tick_every = 0.2
        self._last_tick = 0.0
        # worker-owned
        self._out_count = 0
        self._out_bytes = 0
        self.stored = 0
        self.dropped_worker: dict[str, int] = {}
        self.pruned: dict[str, int] = {"age": 0, "size": 0}
        self.sink_errors: dict[str, int] = {}
        self._flushed: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        # Decoding deferred under backlog: when this many captures are still queued after the
        # worker took a batch, the batch is stored without its processors (decode, correlate)
        # and decoded later, when the queue is empty. Storing every exchange undecoded beats
        # dropping some whole; processors cost ~40 % of the worker's time per exchange.
        self.late_decode: Callable[[list[Exchange]], None] | None = None
        self.defer_backlog = 500
        self.defer_max = 20000  # exchanges held for a late decode; past it they stay undecoded
        self.defer_max_bytes = 64 * 1024**2  # ... and body bytes they hold (1 MiB bodies add up)
        self._deferred: deque[Exchange] = deque()
        self._deferred_bytes = 0
        # Late decoding waits for spare time: only while capture processing kept the worker
        # busy less than LATE_DECODE_MAX_LOAD of the last second. "The queue is empty" alone was
        # not enough: under steady load it is empty between two frames, and decoding old
        # exchanges then (~45 µs each with the row rewrite) took the time the new ones needed.
        self._load_window = 1.0
        self._window_start = time.monotonic()
        self._window_busy = 0.0
        self.load = 0.0
        self.decode_deferred = 0
        self.decoded_late = 0
        self.undecoded = 0

    # ---- loop thread -------------------------------------------------------------------
    def submit_packed(self, packed: bytes, count: int, body_bytes: int,
                      unpack: Callable[[bytes], list[RawCapture]]) -> None:
        """A batch of captures still packed (the recorder process's pipe frames): admitted or
        dropped whole against the same bounds as :meth:`submit`, unpacked by the worker."""
        if (self._in_count - self._out_count + count > self.queue_max
                or self._in_bytes - self._out_bytes + body_bytes > self.queue_max_bytes):
            self.dropped_queue_full += count
            return
        self._in_count += count
        self._in_bytes += body_bytes
        self._q.append(_Packed(packed, count, body_bytes, unpack))

    def submit(self, raw: RawCapture) -> None:
        """Hot path: O(1), never blocks, never raises."""
        size = len(raw.req_body) + len(raw.resp_body)
        if (self._in_count - self._out_count >= self.queue_max
                or self._in_bytes - self._out_bytes + size > self.queue_max_bytes):
            self.dropped_queue_full += 1
            return
        self._in_count += 1
        self._in_bytes += size
        self._q.append(raw)

    @property
    def queue_depth(self) -> int:
        return self._in_count - self._out_count

    def dropped(self) -> dict[str, int]:
        """Drops by reason so far (queue_full, disk_full, locked, recorder_down, ...)."""
        out = dict(self.dropped_worker)
        for reason, n in list(self.remote_dropped.items()):
            out[reason] = out.get(reason, 0) + n
        if self.dropped_queue_full:
            out["queue_full"] = out.get("queue_full", 0) + self.dropped_queue_full
        return out

    def add_remote(self, stats: dict[str, object]) -> None:
        """Stats frame from the proxy process: drop deltas since its last frame, in-flight now."""
        for reason, n in dict(stats.get("dropped_delta") or {}).items():  # type: ignore[call-overload]
            self.remote_dropped[reason] = self.remote_dropped.get(reason, 0) + int(n)
        self.remote_in_flight = int(stats.get("in_flight") or 0)  # type: ignore[call-overload]
        self.remote_high_water = int(stats.get("high_water") or 0)  # type: ignore[call-overload]
        self.remote_active = list(stats.get("active") or ())  # type: ignore[call-overload]

    def add_record(self, kind: str, record: Any) -> None:
        """Any thread: a record to store beside the next batch (bounded; overflow is counted)."""
        if len(self._records) >= self.records_max:
            self.dropped_records = getattr(self, "dropped_records", 0) + 1
            return
        self._records.append((kind, record))

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pdp-capture-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Drain what is queued (bounded by ``timeout``), then close the store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture worker did not drain within %.0fs; %d captures lost",
                            timeout, self.queue_depth)
        if self.writer is not None:
            try:
                if self._asynchronous:
                    self.writer.flush()  # type: ignore[attr-defined]
                    self._collect()
                self._flush_counters()
                self.writer.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the capture store failed: %s", exc)

    # ---- worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._collect()
            batch = self._take_batch()
            if batch:
                t = time.monotonic()
                self.process(batch)
                self._window_busy += time.monotonic() - t
                continue
            if self._deferred and (self._stop.is_set() or self._current_load() < LATE_DECODE_MAX_LOAD):
                self._decode_deferred()  # spare time: catch up on decoding deferred under backlog
                continue
            if self._stop.is_set():
                if self._records:
                    self.process([])  # records handed over before the stop are stored too
                if self._asynchronous:
                    self.writer.flush()  # type: ignore[union-attr]
                    self._collect()
                return
            if self._records or time.monotonic() - self._last_tick >= self.tick_every:
                self.process([])  # time-driven work: snapshots due, records from other threads
            self._maybe_prune()
            self._stop.wait(self.idle_wait)

    def _take_batch(self) -> list[RawCapture]:
        q, batch = self._q, []
        out_count = out_bytes = 0
        try:
            while len(batch) < self.batch_max:
                item = q.popleft()
                if type(item) is _Packed:
                    out_count += item.count
                    out_bytes += item.body_bytes
                    try:
                        batch.extend(item.unpack(item.packed))
                    except Exception as exc:  # noqa: BLE001 - a bad frame costs its captures only
                        log.warning("could not unpack %d captures: %r", item.count, exc)
                        self._drop("process_error", item.count)
                else:
                    out_count += 1
                    out_bytes += len(item.req_body) + len(item.resp_body)
                    batch.append(item)
        except IndexError:
            pass
        self._out_bytes += out_bytes
        self._out_count += out_count
        return batch

    def _drop(self, reason: str, n: int) -> None:
        self.dropped_worker[reason] = self.dropped_worker.get(reason, 0) + n

    def process(self, batch: list[RawCapture]) -> list[Exchange]:
        """Build, enrich, store and fan out one batch (worker thread; also used by tests)."""
        exchanges: list[Exchange] = []
        for raw in batch:
            try:
                exchanges.append(build_exchange(raw, self.redactor, self.body_limit))
            except Exception as exc:  # noqa: BLE001 - bad input costs one capture, not the worker
                log.debug("capture build failed: %r", exc)
                self._drop("process_error", 1)
        self._last_tick = time.monotonic()
        extra: list[Any] = []
        if exchanges and self.late_decode is not None and self.queue_depth >= self.defer_backlog:
            self._defer(exchanges)
        else:
            for proc in self.processors:
                try:
                    extra.extend(proc(exchanges) or ())
                except Exception as exc:  # noqa: BLE001
                    log.warning("processor %s failed: %r", getattr(proc, "name", proc), exc)
        while self._records:
            extra.append(self._records.popleft())
        if self.writer is not None and (exchanges or extra):
            try:
                self.writer.write(exchanges, extra)
                if not self._asynchronous:
                    self.stored += len(exchanges)
                elif exchanges:
                    return exchanges  # stored and fanned out when the store process answers
            except Exception as exc:  # noqa: BLE001 - disk trouble is counted, never raised
                self._write_failed(exc, len(exchanges))
            if exchanges:
                self._flush_counters()
        self._fan_out(exchanges)
        return exchanges

    @property
    def _asynchronous(self) -> bool:
        return bool(getattr(self.writer, "asynchronous", False))

    def _write_failed(self, exc: BaseException | str, n: int) -> None:
        reason = exc if isinstance(exc, str) else classify_sqlite_error(exc)
        self._drop(reason, n)
        log.debug("store write failed (%s): %s", reason, exc)

    def _collect(self) -> None:
        """Account for what the store process answered (asynchronous writer only)."""
        if not self._asynchronous:
            return
        done = self.writer.completed()  # type: ignore[union-attr]
        if not done:
            return
        wrote = False
        for kind, context, reason, _value in done:
            if kind == "write":
                wrote = True
                if reason is None:
                    self.stored += len(context)
                else:
                    self._write_failed(reason, len(context))
                self._fan_out(context)
            elif kind == "update":
                if reason is None:
                    self.decoded_late += context
                else:
                    self.undecoded += context
            elif kind == "counters" and reason is not None:  # pending again for the next flush
                for k, v in context.items():
                    self._flushed[k] = self._flushed.get(k, 0) - v
        if wrote:
            self._flush_counters()

    def _fan_out(self, exchanges: list[Exchange]) -> None:
        if not exchanges:
            return
        for sink in self.sinks:
            try:
                sink.handle(exchanges)
            except Exception as exc:  # noqa: BLE001
                self.sink_errors[sink.name] = self.sink_errors.get(sink.name, 0) + 1
                log.debug("sink %s failed: %r", sink.name, exc)
        return exchanges

    def _current_load(self) -> float:
        """Share of the last full second the worker spent processing captures."""
        now = time.monotonic()
        if now - self._window_start >= self._load_window:
            self.load = self._window_busy / (now - self._window_start)
            self._window_start, self._window_busy = now, 0.0
        return self.load

    def _defer(self, exchanges: list[Exchange]) -> None:
        self.decode_deferred += len(exchanges)
        held = self._deferred
        for ex in exchanges:
            size = _held_bytes(ex)
            if len(held) >= self.defer_max or self._deferred_bytes + size > self.defer_max_bytes:
                self.undecoded += 1
                continue
            held.append(ex)
            self._deferred_bytes += size

    def _decode_deferred(self, limit: int = 100) -> None:
        """Decode (and rewrite) up to ``limit`` exchanges stored undecoded; worker thread, idle."""
        batch = []
        while self._deferred and len(batch) < limit:
            ex = self._deferred.popleft()
            self._deferred_bytes -= _held_bytes(ex)
            batch.append(ex)
        if not batch or self.late_decode is None:
            return
        try:
            self.late_decode(batch)
            if self.writer is not None:
                self.writer.update_decoded(batch)
            if not self._asynchronous:
                self.decoded_late += len(batch)
        except Exception as exc:  # noqa: BLE001 - they stay stored, only undecoded
            self.undecoded += len(batch)
            log.debug("late decode failed: %r", exc)

    def _flush_counters(self) -> None:
        """Persist drop/prune counts (as deltas) so `pdp-observe ls` can say what was lost."""
        if self.writer is None:
            return
        now = {f"dropped.{k}": v for k, v in self.dropped().items()}
        now.update({f"pruned.{k}": v for k, v in self.pruned.items()})
        if self.undecoded:
            now["undecoded.busy"] = self.undecoded
        deltas = {k: v - self._flushed.get(k, 0) for k, v in now.items() if v != self._flushed.get(k, 0)}
        if not deltas:
            return
        try:
            self.writer.add_counters(deltas)
            self._flushed = now
        except Exception:  # noqa: BLE001 - they stay pending for the next try
            pass

    def _maybe_prune(self) -> None:
        if self.writer is None or not (self.max_age or self.max_db_size):
            return
        now = time.monotonic()
        if now - self._last_prune < self.prune_every:
            return
        self._last_prune = now
        try:
            pruned = self.writer.prune(max_age=self.max_age, max_bytes=self.max_db_size)
        except Exception as exc:  # noqa: BLE001
            log.warning("retention pruning failed: %s", exc)
            return
        for reason, n in pruned.items():
            if n:
                self.pruned[reason] += n
                log.info("retention: pruned %d oldest captures (%s limit)", n, reason)
        self._flush_counters()
