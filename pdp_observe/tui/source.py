"""Where the TUI's data comes from: a running sidecar's management API, or a capture file.

Both sources answer the same async questions (a page of rows, one exchange, one
transaction, operation stats, pool series) and produce the same live events, so every
screen works the same attached or offline. Nothing here imports the proxy: the API source
speaks HTTP, the store source reads the file through :class:`pdp_observe.query.Query`.

Events are ``(kind, data)`` pairs: ``("exchanges", {"rows": [...]})`` when rows were stored,
``("stats", {...})`` with live counters, and ``("state", {"ok": bool, "error": str})`` when
the source becomes reachable or unreachable (the API source reconnects by itself).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp

T = TypeVar("T")
Event = tuple[str, dict[str, Any]]

DEFAULT_URL = "http://127.0.0.1:9466"
API = "/api/v1"


class SourceError(Exception):
    """A question the source could not answer; ``str()`` is shown to the user as is."""

    def __init__(self, message: str, *, position: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.position = position
        self.status = status


class SourceUnreachable(SourceError):
    """The sidecar did not answer at all (refused, timed out, reset)."""


class ReplayNeedsConfirm(SourceError):
    """The exchange writes data: the sidecar replays it only with ``confirm``."""


class Source(Protocol):
    """What the TUI asks; the two implementations below answer it."""

    description: str
    can_replay: bool
    live: bool  # attached to a running sidecar (windows end now) rather than reading a file

    async def info(self) -> dict[str, Any]: ...
    async def page(self, filter: str = "", sort: str = "time", desc: bool = True,
                   offset: int = 0, limit: int = 100) -> dict[str, Any]: ...
    async def exchange(self, ex_id: str) -> dict[str, Any]: ...
    async def transaction(self, txn: str) -> dict[str, Any]: ...
    async def operations(self, window_s: float | None = None, filter: str = "",
                         limit: int = 200) -> list[dict[str, Any]]: ...
    async def pool(self, since: float) -> dict[str, Any]: ...
    async def replay(self, ex_id: str, confirm: bool = False) -> dict[str, Any]: ...
    def events(self) -> AsyncIterator[Event]: ...
    async def close(self) -> None: ...


# --------------------------------------------------------------------------- HTTP


class ApiSource:
    """A running sidecar's management API (``--admin-listen``), with bearer-token auth."""

    can_replay = True
    live = True

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *,
                 timeout: float = 10.0, max_backoff: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.description = self.url
        self.token = token
        self.timeout = timeout
        self.max_backoff = max_backoff
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    def unreachable(self, exc: BaseException) -> SourceUnreachable:
        reason = str(exc) or type(exc).__name__
        return SourceUnreachable(f"sidecar unreachable at {self.url}: {reason}")

    async def _call(self, method: str, path: str, params: dict[str, Any] | None = None,
                    body: Any = None) -> Any:
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            async with self._client().request(
                    method, f"{self.url}{API}{path}", params=clean, json=body,
                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                text = await resp.text()
                data = _json_or_none(text)
                if resp.status >= 400:
                    raise _api_error(resp.status, data, text)
                return data
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise self.unreachable(exc) from None
        except aiohttp.ClientError as exc:  # it answered, but not in a way we could read
            raise SourceError(f"unreadable answer from {self.url}: {exc}") from None

    async def info(self) -> dict[str, Any]:
        return await self._call("GET", "/info")

    async def page(self, filter: str = "", sort: str = "time", desc: bool = True,
                   offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return await self._call("GET", "/exchanges", {
            "filter": filter, "sort": sort, "order": "desc" if desc else "asc",
            "offset": offset, "limit": limit})

    async def exchange(self, ex_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/exchanges/{quote(ex_id, safe='')}")

    async def transaction(self, txn: str) -> dict[str, Any]:
        return await self._call("GET", f"/transactions/{quote(txn, safe='')}")

    async def operations(self, window_s: float | None = None, filter: str = "",
                         limit: int = 200) -> list[dict[str, Any]]:
        data = await self._call("GET", "/operations", {"window": window_s, "filter": filter, "limit": limit})
        return data.get("operations", []) if isinstance(data, dict) else data

    async def pool(self, since: float) -> dict[str, Any]:
        return await self._call("GET", "/pool", {"since": since})

    async def replay(self, ex_id: str, confirm: bool = False) -> dict[str, Any]:
        try:
            return await self._call("POST", f"/exchanges/{quote(ex_id, safe='')}/replay", body={"confirm": confirm})
        except SourceError as exc:
            if exc.status == 409:
                raise ReplayNeedsConfirm(str(exc), status=409) from None
            raise

    async def events(self) -> AsyncIterator[Event]:
        """The SSE stream, reconnected with exponential backoff for as long as it is read."""
        backoff = 0.5
        while True:
            try:
                async with self._client().get(
                        f"{self.url}{API}/stream", headers={"Accept": "text/event-stream"},
                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)) as resp:
                    if resp.status >= 400:
                        raise _api_error(resp.status, _json_or_none(await resp.text()), "")
                    yield "state", {"ok": True}
                    backoff = 0.5
                    async for event in parse_sse(sse_lines(resp.content)):
                        yield event
                reason: BaseException = ConnectionResetError("stream closed by the sidecar")
            except (TimeoutError, aiohttp.ClientError, OSError, SourceError) as exc:
                reason = exc
            except Exception as exc:  # noqa: BLE001 - a bad event must cost a reconnect, not the live view
                reason = SourceError(f"live stream broke: {type(exc).__name__}: {exc}")
            err = reason if isinstance(reason, SourceError) and not isinstance(reason, SourceUnreachable) \
                else self.unreachable(reason)
            yield "state", {"ok": False, "error": str(err), "retry_in": backoff}
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _api_error(status: int, data: Any, text: str) -> SourceError:
    msg = data.get("error") if isinstance(data, dict) else None
    position = data.get("position") if isinstance(data, dict) else None
    if status == 401:
        msg = "the sidecar refused the token (set --token or PDP_ADMIN_TOKEN)"
    return SourceError(msg or f"HTTP {status}: {text[:200]}", position=position, status=status)


MAX_SSE_LINE = 32 * 1024**2
"""Longest event line kept; an ``exchanges`` event of 500 rows can be MiBs on one ``data:``
line, which aiohttp's line iterator refuses (it raised and froze the live view), so lines are
split here."""


async def sse_lines(content: aiohttp.StreamReader, max_line: int = MAX_SSE_LINE) -> AsyncIterator[bytes]:
    """Lines of an SSE body of any length (a longer one than ``max_line`` is skipped whole)."""
    buf = bytearray()
    skipping = False
    async for chunk in content.iter_any():
        buf += chunk
        while (nl := buf.find(b"\n")) >= 0:
            line = bytes(buf[:nl + 1])
            del buf[:nl + 1]
            if skipping:
                skipping = False
                continue
            yield line
        if len(buf) > max_line:
            buf.clear()
            skipping = True
    if buf and not skipping:
        yield bytes(buf)


async def parse_sse(lines: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """Server-sent events → ``(event, json data)``; comments and unparsable data are skipped."""
    name, data = "message", []
    async for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                payload = _json_or_none("\n".join(data))
                if isinstance(payload, dict):
                    yield name, payload
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)


# --------------------------------------------------------------------------- file


class _Reader:
    """One thread and the :class:`Query` it owns (SQLite connections stay on their thread)."""

    def __init__(self, path: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdp-tui-store")
        self._query: Any = None
        self._path = path

    def _open(self) -> Any:
        if self._query is None:
            from ..query import Query  # noqa: PLC0415 - the API source never needs it

            self._query = Query(self._path)
        return self._query

    async def run(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(self._open()))
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - StoreError, FilterError, sqlite3 errors: shown
            raise SourceError(getattr(exc, "message", None) or str(exc),
                              position=getattr(exc, "position", None)) from None

    def close(self) -> None:
        if self._query is not None:
            query, self._query = self._query, None
            self._pool.submit(query.close).result()
        self._pool.shutdown(wait=False)


class StoreSource:
    """A capture file, read while a sidecar may still be writing it (WAL)."""

    can_replay = False
    live = False

    def __init__(self, path: str, *, poll_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 description: str | None = None) -> None:
        self.path = path
        self.description = description or path
        self.poll_s = poll_s
        self.clock = clock
        self._pages = _Reader(path)  # list pages never wait behind a slow stats query
        self._misc = _Reader(path)

    async def info(self) -> dict[str, Any]:
        return {"source": "file", "db": self.path, **await self._misc.run(lambda q: q.stats())}

    async def page(self, filter: str = "", sort: str = "time", desc: bool = True,
                   offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return await self._pages.run(lambda q: q.page(filter=filter, sort=sort, desc=desc,
                                                      offset=offset, limit=limit))

    async def exchange(self, ex_id: str) -> dict[str, Any]:
        return await self._misc.run(lambda q: q.exchange(ex_id))

    async def transaction(self, txn: str) -> dict[str, Any]:
        return await self._misc.run(lambda q: q.transaction(txn))

    async def operations(self, window_s: float | None = None, filter: str = "",
                         limit: int = 200) -> list[dict[str, Any]]:
        """Windows end at the newest exchange stored: "the last 5 minutes" of the capture."""
        def run(q: Any) -> list[dict[str, Any]]:
            newest = q.page(limit=1)["rows"]
            until = newest[0]["ts"] if newest else None
            return q.operations(window_s=window_s, filter=filter, limit=limit, until=until)

        return await self._misc.run(run)

    async def pool(self, since: float) -> dict[str, Any]:
        return await self._misc.run(lambda q: q.pool(since))

    async def replay(self, ex_id: str, confirm: bool = False) -> dict[str, Any]:
        raise SourceError("replay needs a running sidecar: start the TUI with --connect "
                          "(a capture file cannot send requests upstream)")

    async def events(self) -> AsyncIterator[Event]:
        """Rows stored after the newest one seen, polled; rates computed from what arrived."""
        last_seq: int | None = None
        last_t = self.clock()
        while True:
            try:
                if last_seq is None:
                    newest = (await self._misc.run(lambda q: q.page(limit=1)))["rows"]
                    last_seq = newest[0]["seq"] if newest else 0
                    fresh: list[dict[str, Any]] = []
                    yield "state", {"ok": True}
                else:
                    fresh = await self._misc.run(functools.partial(_after, seq=last_seq))
            except SourceError as exc:
                yield "state", {"ok": False, "error": f"cannot read {self.path}: {exc}"}
                await asyncio.sleep(self.poll_s * 4)
                continue
            now = self.clock()
            if fresh:
                last_seq = max(r.get("seq") or 0 for r in fresh)
                yield "exchanges", {"rows": fresh}
            yield "stats", _offline_stats(fresh, max(now - last_t, 1e-3))
            last_t = now
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        self._pages.close()
        self._misc.close()


def _after(q: Any, seq: int) -> list[dict[str, Any]]:
    return q.after(seq, limit=1000)


def _offline_stats(rows: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    errors = sum(1 for r in rows if r.get("failure") or (r.get("status") or 0) >= 400 or r.get("error_code"))
    return {"rps": len(rows) / elapsed, "error_rate": errors / len(rows) if rows else 0.0,
            "in_flight": None, "open_transactions": None, "offline": True}


def make_source(connect: str | None, token: str | None, db: str | None) -> Source:
    """``--db`` wins (offline); otherwise the sidecar at ``--connect`` (or the default URL)."""
    if db:
        return StoreSource(db)
    return ApiSource(connect or DEFAULT_URL, token)
