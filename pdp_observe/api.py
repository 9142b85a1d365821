"""The management API: ``/api/v1`` on the admin listener (see docs/api.md).

It runs on the admin listener's event loop — the recorder process's in the default
``--recorder process`` mode, so it never competes with forwarding — and every store read
runs in a worker thread (:func:`asyncio.to_thread`) so the loop never waits on SQLite.

* Reads come from :class:`pdp_observe.query.Query` (pages, one exchange, transactions,
  operations, pool).
* ``GET /api/v1/stream`` (Server-Sent Events) is fed by :class:`LiveFeed`, a sink of the
  capture worker: it turns each stored batch into rows on the worker thread and hands them to
  the loop with ``call_soon_threadsafe``; each subscriber holds at most ``STREAM_BATCH_MAX``
  rows (a slow client is told how many it missed, never buffered for).
* ``POST /api/v1/exchanges/{id}/replay`` sends a recorded request again (:mod:`.replay`).
* With ``--admin-token`` every ``/api/`` request needs ``Authorization: Bearer <token>``;
  ``/healthz`` and ``/metrics`` stay open.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from . import __version__
from .exchange import Exchange
from .filterlang import FilterError, compile_filter
from .query import PAGE_MAX, SORTS, Query, row_from_exchange
from .replay import NotReplayable, body_diff, client_body, read_only, replay_request
from .store import filter_row

log = logging.getLogger("pdp_observe.api")

STREAM_EVERY = 0.25  # at most one `exchanges` event per subscriber this often
STREAM_BATCH_MAX = 500  # rows per event; older rows past it are skipped (and counted)
STATS_EVERY = 1.0
PING_EVERY = 15.0
SUBSCRIBERS_MAX = 64
REPLAY_BODY_MAX = 16 * 1024 * 1024

# --------------------------------------------------------------------------- live feed


class Subscriber:
    """One stream client's pending rows: bounded; what does not fit is counted as skipped."""

    def __init__(self, flt: Any = None) -> None:
        self.filter = flt  # a CompiledFilter or None
        self.pending: deque[dict[str, Any]] = deque()
        self.skipped = 0
        self.wake = asyncio.Event()

    def offer(self, items: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        added = False
        for row, frow in items:
            if self.filter is not None and not self.filter.matches(frow or {}):
                continue
            if len(self.pending) >= STREAM_BATCH_MAX:
                self.pending.popleft()  # keep the newest: a live view wants what happens now
                self.skipped += 1
            self.pending.append(row)
            added = True
        if added:
            self.wake.set()

    def take(self) -> tuple[list[dict[str, Any]], int]:
        rows, skipped = list(self.pending), self.skipped
        self.pending.clear()
        self.skipped = 0
        return rows, skipped


class LiveFeed:
    """Recorder sink: new stored exchanges → stream subscribers; rates for the stats event.

    ``handle`` runs on the capture worker thread after the batch was written; it only builds
    rows when someone is subscribed. Counters are written by that thread only.
    """

    name = "live"

    def __init__(self, recorder: Any = None) -> None:
        self.recorder = recorder
        self.loop: asyncio.AbstractEventLoop | None = None
        self.subscribers: set[Subscriber] = set()
        self._filtered = 0  # subscribers with a filter (loop thread writes; worker reads)
        self.seen = 0
        self.errors = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def subscribe(self, flt: Any = None) -> Subscriber:
        sub = Subscriber(None if flt is None or flt.empty else flt)
        self.subscribers.add(sub)
        self._filtered += sub.filter is not None
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            self._filtered -= sub.filter is not None

    # ---- worker thread ---------------------------------------------------------------
    def handle(self, exchanges: list[Exchange]) -> None:
        self.seen += len(exchanges)
        self.errors += sum(1 for ex in exchanges if _is_error(ex))
        loop = self.loop
        if not self.subscribers or loop is None or loop.is_closed():
            return
        seqs = self._seqs(exchanges)
        frows = self._filtered > 0
        items = [(row_from_exchange(ex, seq), filter_row(ex) if frows else None)
                 for ex, seq in zip(exchanges, seqs) if seq is not None]
        if items:
            try:
                loop.call_soon_threadsafe(self._publish, items)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _seqs(self, exchanges: list[Exchange]) -> list[int | None]:
        """Store seq of each exchange (one batch is inserted in order: usually two lookups)."""
        writer = getattr(self.recorder, "writer", None)
        if writer is None:
            return [None] * len(exchanges)
        conn = writer.conn
        q = "SELECT seq FROM exchanges WHERE id = ?"
        first = conn.execute(q, (exchanges[0].id,)).fetchone()
        last = conn.execute(q, (exchanges[-1].id,)).fetchone()
        if first is not None and last is not None and last[0] - first[0] == len(exchanges) - 1:
            return list(range(first[0], last[0] + 1))
        out: list[int | None] = []
        for ex in exchanges:  # some were not stored (a failed write) or the batch interleaved
            row = conn.execute(q, (ex.id,)).fetchone()
            out.append(row[0] if row else None)
        return out

    # ---- loop thread -----------------------------------------------------------------
    def _publish(self, items: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        for sub in list(self.subscribers):
            try:
                sub.offer(items)
            except Exception as exc:  # noqa: BLE001 - one subscriber's filter must not stop others
                log.debug("stream subscriber failed: %r", exc)

    def close(self) -> None:
        for sub in list(self.subscribers):
            sub.wake.set()


def _is_error(ex: Exchange) -> bool:
    op = ex.operation
    return bool(ex.failure or (ex.status or 0) >= 400 or (op is not None and op.error_code))


# ------------------------------------------------------------------------------ context


@dataclass
class Api:
    """What the handlers need; built by :meth:`RecordingSide.start_admin`."""

    db: str
    upstream: str
    feed: LiveFeed
    token: str = ""
    started: float = field(default_factory=time.time)
    in_flight: Callable[[], int] | None = None
    high_water: Callable[[], int] | None = None
    dropped: Callable[[], dict[str, int]] | None = None
    pool_latest: Callable[[], Any] | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    _query: Query | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def query(self) -> Query:
        if self._query is None:
            self._query = Query(self.db)
        return self._query

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def stats(self, last: tuple[float, int, int] | None) -> tuple[dict[str, Any], tuple[float, int, int]]:
        """The ``stats`` event; ``last`` is (time, seen, errors) of this subscriber's previous one."""
        now = time.monotonic()
        seen, errors = self.feed.seen, self.feed.errors
        if last is None or now <= last[0]:
            rps, error_rate = 0.0, 0.0
        else:
            n = seen - last[1]
            rps = n / (now - last[0])
            error_rate = (errors - last[2]) / n if n else 0.0
        dropped = self.dropped() if self.dropped is not None else {}
        sample = self.pool_latest() if self.pool_latest is not None else None
        return {
            "ts": time.time(),
            "in_flight": self.in_flight() if self.in_flight is not None else None,
            "high_water": self.high_water() if self.high_water is not None else None,
            "rps": round(rps, 3), "error_rate": round(error_rate, 4),
            "dropped": sum(dropped.values()), "dropped_by_reason": dropped,
            "pool": sample.to_dict() if sample is not None else None,
        }, (now, seen, errors)

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(auto_decompress=True)
        return self._session

    async def close(self) -> None:
        self.closing.set()
        self.feed.close()
        if self._session is not None:
            await self._session.close()
        if self._query is not None:
            q, self._query = self._query, None
            await asyncio.to_thread(q.close)


API_KEY = web.AppKey("pdp_api", Api)


# --------------------------------------------------------------------------- helpers


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


def ok(data: Any) -> web.Response:
    return web.json_response(data, dumps=_dumps)


def _int(request: web.Request, name: str, default: int, lo: int = 0, hi: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}={value} is out of range ({lo}..{hi if hi is not None else ''})")
    return value


def _float(request: web.Request, name: str, default: float | None) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _authorized(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    api: Api = request.app[API_KEY]
    if api.token and not _authorized(request.headers.get("Authorization"), api.token):
        resp = error(401, "this sidecar's management API needs 'Authorization: Bearer <token>' "
                          "(the --admin-token / PDP_ADMIN_TOKEN it was started with)")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="pdp_observe"'
        return resp
    try:
        return await handler(request)
    except FilterError as exc:
        return error(400, f"filter error at {exc.position}: {exc.message}", position=exc.position)
    except LookupError as exc:
        return error(404, str(exc.args[0]) if exc.args else "not found")
    except ValueError as exc:
        return error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, exc.reason if exc.status != 404 else
                         f"no such endpoint: {request.method} {request.path} (see docs/api.md)")
        raise
    except Exception as exc:
        log.exception("management API: %s %s failed", request.method, request.path)
        return error(500, f"internal error: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------ routes


async def info(request: web.Request) -> web.Response:
    api: Api = request.app[API_KEY]
    return ok({"version": __version__, "upstream": api.upstream, "db": api.db, "started": api.started,
               "admin": True})


async def exchanges(request: web.Request) -> web.Response:
    api: Api = request.app[API_KEY]
    q = request.query
    sort = q.get("sort") or "time"
    if sort not in SORTS:
        raise ValueError(f"sort={sort!r}: use one of {', '.join(SORTS)}")
    order = (q.get("order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise ValueError(f"order={order!r}: use asc or desc")
    return ok(await api.run(api.query.page, q.get("filter") or "", sort, order == "desc",
                            _int(request, "offset", 0), _int(request, "limit", 100, 0, PAGE_MAX)))


async def exchange(request: web.Request) -> web.Response:
    api: Api = request.app[API_KEY]
    return ok(await api.run(api.query.exchange, request.match_info["id"]))


async def transaction(request: web.Request) -> web.Response:
    api: Api = request.app[API_KEY]
    return ok(await api.run(api.query.transaction, request.match_info["txn"]))


async def operations(request: web.Request) -> web.Response:
    api: Api = request.app[API_KEY]
    window = _float(request, "window", None)
    if window is not None and window <= 0:
        raise ValueError("window must be > 0 seconds")
    return ok(await api.run(api.query.operations, window, request.query.get("filter") or "",
                            _int(request, "limit", 200, 0, 10000), _float(request, "until", None)))


async def pool(request: web.Request) -> web.Response:
    api: Api = request.app[API_KEY]
    since = _float(request, "since", None)
    if since is None:
        since = time.time() - 300.0
    elif since < 0:  # relative: the last N seconds
        since = time.time() + since
    return ok(await api.run(api.query.pool, since, _float(request, "until", None)))


async def stats(request: web.Request) -> web.Response:
    api: Api = request.app[API_KEY]
    store = await api.run(api.query.stats)
    live, _ = api.stats(None)
    return ok({"store": store, "live": live})


async def stream(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[API_KEY]
    flt = None
    if text := (request.query.get("filter") or "").strip():
        flt = compile_filter(text)  # FilterError → 400 before the stream starts
    if len(api.feed.subscribers) >= SUBSCRIBERS_MAX:
        return error(503, f"too many stream clients (at most {SUBSCRIBERS_MAX})")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    sub = api.feed.subscribe(flt)
    loop = asyncio.get_running_loop()
    try:
        await resp.write(b"retry: 2000\n\n")
        data, last = api.stats(None)
        await resp.write(_event("stats", data))
        now = loop.time()
        next_stats, next_ping, last_rows = now + STATS_EVERY, now + PING_EVERY, 0.0
        while not api.closing.is_set():
            now = loop.time()
            due = min(next_stats, next_ping)
            if sub.pending:
                due = min(due, last_rows + STREAM_EVERY)
            if due > now:
                sub.wake.clear()
                if not sub.pending:
                    try:
                        await asyncio.wait_for(sub.wake.wait(), due - now)
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(due - now)
                continue
            if sub.pending and now >= last_rows + STREAM_EVERY:
                rows, skipped = sub.take()
                payload: dict[str, Any] = {"rows": rows}
                if skipped:
                    payload["skipped"] = skipped
                await resp.write(_event("exchanges", payload))
                last_rows = loop.time()
            if now >= next_stats:
                data, last = api.stats(last)
                await resp.write(_event("stats", data))
                next_stats = now + STATS_EVERY
            if now >= next_ping:
                await resp.write(b": ping\n\n")
                next_ping = now + PING_EVERY
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        api.feed.unsubscribe(sub)
    return resp


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS) + b"\n\n"


async def replay(request: web.Request) -> web.Response:
    api: Api = request.app[API_KEY]
    confirm = False
    if request.can_read_body:
        try:
            body = await request.json(loads=orjson.loads)
        except ValueError:
            raise ValueError("the body must be JSON, e.g. {\"confirm\": false}") from None
        if body is not None and not isinstance(body, dict):
            raise ValueError("the body must be a JSON object, e.g. {\"confirm\": false}")
        confirm = (body or {}).get("confirm", False)
        if not isinstance(confirm, bool):
            raise ValueError("confirm must be true or false")
    ex = await api.run(api.query.load, request.match_info["id"])
    ro, why = read_only(ex)
    try:  # first: confirming would not help a request that cannot be sent as it was
        rr = replay_request(ex)
    except NotReplayable as exc:
        return error(422, str(exc), read_only=ro, reason=why)
    if not ro and not confirm:
        return error(409, f"not replayed: {why}. Replaying it may change data in the database; send "
                          "{\"confirm\": true} to replay it anyway", read_only=False, reason=why)
    notes = list(rr.notes)
    if rr.left_out:
        notes.append(f"replayed without the redacted header(s) {', '.join(rr.left_out)}: the original "
                     "values are not stored")
    session = await api.session()
    timeout = aiohttp.ClientTimeout(connect=api.connect_timeout, sock_read=api.read_timeout)
    t0 = time.perf_counter()
    try:
        async with session.request(rr.method, api.upstream.rstrip("/") + rr.path, headers=rr.headers,
                                   data=rr.body or None, allow_redirects=False, timeout=timeout,
                                   skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding")) as resp:
            data = await resp.content.read(REPLAY_BODY_MAX + 1)
            status, headers = resp.status, [[k, v] for k, v in resp.headers.items()]
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return error(502, f"replay to {api.upstream} failed: {type(exc).__name__}: {exc}")
    duration = (time.perf_counter() - t0) * 1000.0
    if len(data) > REPLAY_BODY_MAX:
        data = data[:REPLAY_BODY_MAX]
        notes.append(f"the replay's response was cut at {REPLAY_BODY_MAX} bytes")
    if rr.left_out and status in (401, 403):
        return error(422, f"the upstream answered {status} without the redacted header(s) "
                          f"{', '.join(rr.left_out)}: the request needs credentials the capture does not "
                          "keep, so it cannot be replayed faithfully", read_only=ro, reason=why,
                     replay_status=status)
    original = client_body(ex)
    rs = ex.response
    if rs is not None and rs.body.truncated:
        notes.append("the original response was truncated when captured: the diff compares its stored prefix")
    return ok({
        "id": ex.id, "status": status, "headers": headers, "body": data.decode("utf-8", "replace"),
        "duration_ms": round(duration, 3), "read_only": ro, "reason": why, "confirmed": confirm,
        "original": {"status": rs.status if rs else None, "body": original.decode("utf-8", "replace"),
                     "duration_ms": None if ex.timings.duration_ms is None else round(ex.timings.duration_ms, 3)},
        "diff": body_diff(original, data), "same_status": (rs.status if rs else None) == status,
        "notes": notes,
    })


async def not_found(request: web.Request) -> web.Response:
    return error(404, f"no such endpoint: {request.method} {request.path} (see docs/api.md)")


def build_api(api: Api) -> web.Application:
    """The ``/api/v1`` sub-application (mount with ``add_subapp("/api/v1", ...)``)."""
    app = web.Application(middlewares=[_guard])
    app[API_KEY] = api
    r = app.router
    r.add_get("/info", info)
    r.add_get("/exchanges", exchanges)
    r.add_get("/exchanges/{id}", exchange)
    r.add_post("/exchanges/{id}/replay", replay)
    r.add_get("/transactions/{txn}", transaction)
    r.add_get("/operations", operations)
    r.add_get("/pool", pool)
    r.add_get("/stats", stats)
    r.add_get("/stream", stream)
    r.add_route("*", "/{tail:.*}", not_found)

    async def on_shutdown(_: web.Application) -> None:
        api.closing.set()
        api.feed.close()

    async def on_cleanup(_: web.Application) -> None:
        await api.close()

    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
