"""Polls the engine's ``/metrics`` so each recorded exchange can be joined to the pool state.

A capture says *that* a query waited; the engine's pool gauges say *why* (all connections
busy, or a wait gauge that never came back down). :class:`EngineScraper` keeps a bounded time
series of :class:`PoolSample`, answers :meth:`EngineScraper.at` for "what did the pool look like
when this exchange ran", counts its own failures, and re-exports what the engine said (with
the engine's bugs flagged, never repaired) through a Prometheus collector on an injected
registry.

Time-series flags come from :class:`PoolTracker`, a pure state machine fed one parsed document
at a time, so the rules are tested on the recorded 4.7.1 scrapes without any I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .metrics_text import (
    DOCUMENTED_TYPES,
    POOL_KEYS,
    EngineMetrics,
    Family,
    parse_json,
    parse_prometheus,
    pool_from,
)

log = logging.getLogger("pdp_observe.engine.scraper")

OUTCOMES = ("ok", "http_error", "timeout", "connect_error", "parse_error")
MAX_BODY = 8 * 1024 * 1024
"""Largest /metrics body read (the engine's is ~4 KiB); a wrong URL must not eat memory."""

STUCK_AFTER = 3
"""Consecutive samples of "someone waits while a connection is free" that raise stuck_wait."""

WAIT_HIST = "prisma_client_queries_wait_histogram_ms"


# ---------------------------------------------------------------------------------- samples


@dataclass(slots=True)
class PoolSample:
    """The pool as one successful scrape saw it.

    ``t``: epoch seconds when the request was sent. ``pool``: :func:`pool_from` (keys
    :data:`POOL_KEYS`, values as reported, ``None`` when missing). ``flags``: the document's
    flags plus the time-series ones (``stuck_wait``, ``wait_hist_reset``), sorted.
    ``wait_delta``: per-bucket increase of the wait histogram since the previous sample
    (``None`` for the first sample or when the engine reports no wait histogram).
    """

    t: float
    pool: dict[str, Any]
    flags: list[str] = field(default_factory=list)
    wait_delta: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, always the same keys (``t``, ``pool``, ``flags``, ``wait_delta``)."""
        pool = {k: (dict(v) if isinstance(v, dict) else v)
                for k, v in ((k, self.pool.get(k)) for k in POOL_KEYS)}
        return {"t": self.t, "pool": pool, "flags": list(self.flags),
                "wait_delta": dict(self.wait_delta) if self.wait_delta is not None else None}


class PoolTracker:
    """Turns successive documents into :class:`PoolSample` with time-series flags (pure).

    **stuck_wait** — derived from the recorded 4.7.1 run (``metrics.jsonl``, pool of 2,
    ``pool_timeout=1``). While a burst really saturates the pool the engine reports
    ``waiting > 0`` with ``busy == open`` and ``idle == 0``. After the P2024 timeouts the
    timed-out queries are never subtracted: ``waiting`` stays at 4 with ``busy 0``, ``idle 2``,
    and after the second burst at 8 (4 old + 4 new phantoms; during that burst it read 10 =
    4 phantoms + 6 real waiters). ``active`` is 0 in every one of the 72 scrapes, bursts included,
    so ``active == 0`` says nothing on this engine and is not used. The rule:

    * *suspicious* sample: ``waiting > 0`` while a connection is free, i.e. ``idle > 0`` or
      ``0 < busy < open`` (``open`` is ignored when negative: the seed's -9 gauge);
    * ``stuck_wait`` is raised after :data:`STUCK_AFTER` consecutive suspicious samples (a
      healthy pool hands a freed connection to a waiter within microseconds, so three scrapes
      in a row never see both), and then stays raised while ``waiting > 0``: from then on the
      gauge includes phantoms, also during a later real saturation. It clears when the engine
      reports ``waiting`` 0 (or stops reporting it), e.g. after a restart.

    **wait_delta** — per-bucket increase of ``wait_hist`` since the previous sample. If any
    bucket went down, the engine restarted (counter reset): the delta is the new cumulative
    value (what accumulated since the restart, as Prometheus' ``increase()`` counts it), the
    sample gets ``wait_hist_reset`` and :attr:`resets` is incremented. Never negative. A
    histogram that appears after a sample without it (engines >= 5 print histograms only after
    their first observation) counts from zero.
    """

    def __init__(self, stuck_after: int = STUCK_AFTER) -> None:
        self.stuck_after = stuck_after
        self.resets = 0
        self._seen = False
        self._prev_hist: dict[str, float] | None = None
        self._run = 0
        self._stuck = False

    def observe(self, t: float, metrics: EngineMetrics) -> PoolSample:
        pool = pool_from(metrics)
        flags = set(metrics.flags)

        waiting, idle, busy, open_ = (pool.get(k) for k in ("waiting", "idle", "busy", "open"))
        room = (_num(idle) and idle > 0) or (
            _num(busy) and _num(open_) and open_ > 0 and busy < open_)
        waits = _num(waiting) and waiting > 0
        self._run = self._run + 1 if (waits and room) else 0
        if not waits:
            self._stuck = False
        elif self._run >= self.stuck_after:
            self._stuck = True
        if self._stuck:
            flags.add("stuck_wait")

        hist = pool.get("wait_hist")
        delta: dict[str, float] | None = None
        if hist is not None and self._seen:
            prev = self._prev_hist or {}
            if any(hist.get(le, 0) < n for le, n in prev.items()):
                self.resets += 1
                flags.add("wait_hist_reset")
                delta = dict(hist)
            else:
                delta = {le: n - prev.get(le, 0) for le, n in hist.items()}
        self._prev_hist = dict(hist) if hist is not None else None
        self._seen = True
        return PoolSample(t, pool, sorted(flags), delta)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------- scraper


class EngineScraper:
    """Scrapes one engine's ``/metrics`` every ``interval`` seconds (GET, no body).

    The URL decides the format the way the engine does: a query string containing
    ``format=json`` is read as JSON, anything else as Prometheus text. A failing scrape is
    counted by outcome (:data:`OUTCOMES`) and the loop carries on; it never raises out.
    Only fully readable documents become samples (a half-read one would fake a counter reset).
    """

    def __init__(self, url: str, interval: float = 1.0, timeout: float = 2.0,
                 max_samples: int = 3600, *, session: aiohttp.ClientSession | None = None,
                 stuck_after: int = STUCK_AFTER,
                 on_sample: Callable[[PoolSample], None] | None = None) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be positive")
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.json = "format=json" in url.partition("?")[2]
        self._samples: deque[PoolSample] = deque(maxlen=max_samples)
        self.on_sample = on_sample  # e.g. the recorder storing samples for the TUI's sparklines
        self._tracker = PoolTracker(stuck_after)
        self._session = session
        self._own_session = session is None
        self._task: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.last_result: str | None = None
        self.last_success: float | None = None
        self.last_duration: float | None = None
        self.last_error: str | None = None
        self.last_metrics: EngineMetrics | None = None
        """The last document read whole: what :meth:`collector` re-exports."""

    # -- lifecycle

    async def start(self) -> None:
        """Start polling (the first scrape is immediate); idempotent."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="engine-scraper")

    async def stop(self) -> None:
        """Stop polling and close the session this scraper opened; leaves no task behind."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._own_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.scrape_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # scrape_once catches everything; this is the last guard
                log.exception("engine scrape of %s failed unexpectedly", self.url)
            next_at += self.interval
            now = loop.time()
            if next_at < now:  # a slow scrape: skip the missed ticks, keep the phase
                next_at += ((now - next_at) // self.interval + 1) * self.interval
            await asyncio.sleep(next_at - now)

    # -- one scrape

    async def scrape_once(self) -> PoolSample | None:
        """One GET; the new sample, or ``None`` if it failed (the failure is counted)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # samples stay in time order even if called beside the loop
            return await self._scrape()

    async def _scrape(self) -> PoolSample | None:
        t = time.time()
        t0 = time.perf_counter()
        status, body = 0, b""
        try:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession()
                self._own_session = True
            async with self._session.get(self.url, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                status = resp.status
                body = await _read_capped(resp)
        except asyncio.CancelledError:
            raise
        except TimeoutError:  # also aiohttp's ServerTimeoutError
            return self._fail(t0, "timeout", f"no answer within {self.timeout:g} s")
        except aiohttp.ClientConnectionError as exc:
            return self._fail(t0, "connect_error", _describe(exc))
        except _TooLarge:
            return self._fail(t0, "parse_error", f"body larger than {MAX_BODY} bytes")
        except Exception as exc:  # noqa: BLE001 - ClientError, a bad URL, a session closed meanwhile
            return self._fail(t0, "http_error", _describe(exc))
        if status != 200:
            snippet = body[:200].decode("utf-8", "replace").strip()
            return self._fail(t0, "http_error", f"HTTP {status}" + (f": {snippet}" if snippet else ""))
        try:
            metrics = parse_json(body) if self.json else parse_prometheus(body)
        except Exception as exc:  # the parsers never raise; keep the loop alive if one does
            log.exception("engine metrics parser raised")
            return self._fail(t0, "parse_error", f"parser error: {_describe(exc)}")
        if metrics.errors:
            return self._fail(t0, "parse_error", "; ".join(metrics.errors[:3]))
        sample = self._tracker.observe(t, metrics)
        self._samples.append(sample)
        if self.on_sample is not None:
            try:
                self.on_sample(sample)
            except Exception:  # noqa: BLE001 - a consumer's trouble is not a scrape error
                log.exception("pool sample consumer failed")
        self.last_metrics = metrics
        self.last_success = t
        self._done(t0, "ok", None)
        return sample

    def _fail(self, t0: float, outcome: str, error: str) -> None:
        self._done(t0, outcome, error[:500])

    def _done(self, t0: float, outcome: str, error: str | None) -> None:
        self.counts[outcome] += 1
        self.last_result = outcome
        self.last_duration = time.perf_counter() - t0
        if error is not None:
            self.last_error = error

    # -- reading

    @property
    def samples(self) -> list[PoolSample]:
        """The kept samples, oldest first (a copy)."""
        return list(self._samples)

    @property
    def latest(self) -> PoolSample | None:
        return self._samples[-1] if self._samples else None

    def at(self, t: float) -> PoolSample | None:
        """The latest sample taken at or before ``t`` (epoch seconds); ``None`` if none was.

        Searched newest first: joins are nearly always about recent exchanges.
        """
        for sample in reversed(self._samples):
            if sample.t <= t:
                return sample
        return None

    @property
    def counter_resets(self) -> int:
        return self._tracker.resets

    def health(self) -> dict[str, Any]:
        """Counts by outcome and the last scrape's facts, for /healthz."""
        return {"url": self.url, "counts": dict(self.counts), "last_result": self.last_result,
                "last_success": self.last_success, "last_duration": self.last_duration,
                "last_error": self.last_error, "samples": len(self._samples),
                "counter_resets": self._tracker.resets}

    def collector(self, upstream_label: str) -> EngineMetricsCollector:
        """A Prometheus collector for this scraper; :meth:`EngineMetricsCollector.add` more
        scrapers to it rather than registering one collector per upstream (see there)."""
        return EngineMetricsCollector([(upstream_label, self)])


class _TooLarge(Exception):
    pass


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -------------------------------------------------------------------------------- collector


class EngineMetricsCollector(Collector):
    """Re-exports the engines' last good documents and the scrapers' health.

    (a) Every family of each upstream's last successful scrape goes out under the engine's own
    names, as declared, with an ``upstream`` label added (an engine label of that name becomes
    ``exported_upstream``). A family printed twice goes out once, from its documented-type copy;
    ``pdp_engine_metric_flag{upstream,flag} 1`` lists every current flag (document and time
    series), so the engine's bugs are visible next to the numbers. One caveat of the exposition
    library: it writes a counter's HELP/TYPE lines as ``<name>_total``, so a counter the engine
    declared *without* ``_total`` (4.7.1's ``prisma_pool_connections_open``) keeps its series
    name and value but its TYPE line reads ``prisma_pool_connections_open_total counter``.
    A family that would collide with one already exported (another name mapping to the same
    exposition lines, or another upstream declaring a different type) is left out and flagged
    ``export_conflict:<family>``: a duplicate family would make Prometheus reject the scrape.

    (b) Health: ``pdp_engine_scrapes_total{upstream,result}``,
    ``pdp_engine_scrape_duration_seconds``, ``pdp_engine_last_scrape_success_timestamp_seconds``
    (0 until the first success) and ``pdp_engine_up`` (1 if the last scrape was ok).

    Several upstreams must share one collector (:meth:`add`): two collectors would each print
    ``prisma_client_queries_total``, and duplicate families break the exposition. ``describe``
    names the fixed ``pdp_engine_*`` families so the registry refuses a second collector.
    """

    def __init__(self, sources: Iterable[tuple[str, EngineScraper]] = ()) -> None:
        self._sources: list[tuple[str, EngineScraper]] = list(sources)

    def add(self, upstream_label: str, scraper: EngineScraper) -> EngineMetricsCollector:
        self._sources.append((upstream_label, scraper))
        return self

    def describe(self) -> Iterable[Metric]:
        return self._health(describe=True)

    def collect(self) -> Iterable[Metric]:
        exported: dict[str, Metric] = {}
        owner: dict[str, str] = {}
        flag_family = GaugeMetricFamily("pdp_engine_metric_flag", "1 for each engine bug or "
                                        "pool anomaly seen in the last good scrape",
                                        labels=["upstream", "flag"])
        flags: dict[str, set[str]] = {}
        pending: list[tuple[str, Family]] = []
        for label, scraper in self._sources:
            latest, m = scraper.latest, scraper.last_metrics
            flags.setdefault(label, set()).update(latest.flags if latest is not None else ())
            pending += [(label, fam) for fam in _chosen(m.families if m is not None else [])]
        # Documented types first: when two engines disagree on a type, the documented one is
        # exported and the other one is flagged, whatever the upstream order.
        pending.sort(key=lambda lf: DOCUMENTED_TYPES.get(lf[1].name, lf[1].type) != lf[1].type)
        for label, fam in pending:
            if not _export(fam, label, exported, owner):
                flags[label].add(f"export_conflict:{fam.name}")
        for label, found in flags.items():
            for flag in sorted(found):
                flag_family.add_metric([label, flag], 1)
        yield from exported.values()
        yield flag_family
        yield from self._health()

    def _health(self, describe: bool = False) -> list[Metric]:
        scrapes = CounterMetricFamily("pdp_engine_scrapes", "Scrapes of the engine's /metrics "
                                      "by result", labels=["upstream", "result"])
        duration = GaugeMetricFamily("pdp_engine_scrape_duration_seconds", "How long the last "
                                     "scrape took", labels=["upstream"])
        success = GaugeMetricFamily("pdp_engine_last_scrape_success_timestamp_seconds", "When the "
                                    "last good scrape was sent (epoch s; 0 = never)", labels=["upstream"])
        up = GaugeMetricFamily("pdp_engine_up", "1 if the last scrape of the engine succeeded",
                               labels=["upstream"])
        families = [scrapes, duration, success, up]
        if describe:
            return families
        for label, s in self._sources:
            for result in OUTCOMES:
                scrapes.add_metric([label, result], s.counts[result])
            if s.last_duration is not None:
                duration.add_metric([label], s.last_duration)
            success.add_metric([label], s.last_success or 0.0)
            up.add_metric([label], 1.0 if s.last_result == "ok" else 0.0)
        return families


_RESERVED = frozenset({"pdp_engine_metric_flag", "pdp_engine_scrapes", "pdp_engine_scrapes_total",
                       "pdp_engine_scrape_duration_seconds",
                       "pdp_engine_last_scrape_success_timestamp_seconds", "pdp_engine_up"})


def _chosen(families: list[Family]) -> list[Family]:
    """One family per name, in document order: the documented-type copy of a duplicate."""
    picked: dict[str, Family] = {}
    for fam in families:
        have = picked.get(fam.name)
        if have is None or (have.type != DOCUMENTED_TYPES.get(fam.name)
                            and fam.type == DOCUMENTED_TYPES.get(fam.name)):
            picked[fam.name] = fam
    return [f for f in families if picked.get(f.name) is f]


_PROM_TYPES = {"counter", "gauge", "histogram", "summary", "gaugehistogram", "info", "stateset"}


def _export(fam: Family, label: str, exported: dict[str, Metric], owner: dict[str, str]) -> bool:
    """Add ``fam``'s samples (with ``upstream``) to ``exported``; False if it would collide."""
    typ = fam.type if fam.type in _PROM_TYPES else "unknown"
    # prometheus_client names a counter family without its _total and prints it back with it.
    metric_name = fam.name[:-6] if typ == "counter" and fam.name.endswith("_total") else fam.name
    header = metric_name + "_total" if typ == "counter" else metric_name
    names = {metric_name, header, fam.name} | {s.name for s in fam.samples}
    if any(n in _RESERVED or owner.get(n, metric_name) != metric_name for n in names):
        return False
    metric = exported.get(metric_name)
    if metric is not None and metric.type != typ:
        return False  # another upstream declared it differently
    if metric is None:
        try:
            metric = Metric(metric_name, fam.help, typ)
        except ValueError:  # a name prometheus_client refuses
            return False
        exported[metric_name] = metric
    for n in names:
        owner[n] = metric_name
    seen = {(s.name, tuple(sorted(s.labels.items()))) for s in metric.samples}
    for s in fam.samples:
        labels = {("exported_upstream" if k == "upstream" else k): v for k, v in s.labels.items()}
        labels["upstream"] = label
        key = (s.name, tuple(sorted(labels.items())))
        if key not in seen:  # a series printed twice goes out once
            seen.add(key)
            metric.add_sample(s.name, labels, float(s.value))
    return True
