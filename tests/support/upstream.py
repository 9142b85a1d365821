"""A real aiohttp upstream for integration tests, with the behaviours a proxy must survive.

Routes (any method):
  /echo            JSON: method, path_qs, headers (pairs as received), body length + sha256
  /big?size=N      streams N deterministic bytes, chunked (no Content-Length)
  /sized?size=N    N deterministic bytes with Content-Length, streamed in 64 KiB writes
  /gzip            a gzip-encoded JSON body (Content-Encoding: gzip) — must pass byte-identical
  /slow?delay=S    answers after S seconds
  /hang            never answers (read-timeout tests)
  /reset           closes the TCP connection without answering
  /reset-mid       sends headers and part of the body, then drops the connection
  /peer            the upstream-side client port (tells connection reuse apart)
  /hop             answers with hop-by-hop headers that must not reach the client
  /events          records that the handler was cancelled (client-abort tests)
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from dataclasses import dataclass, field

from aiohttp import web

GZIP_PAYLOAD = json.dumps({"data": {"findManyUser": [{"id": i, "email": f"u{i}@example.test"}
                                                     for i in range(50)]}}).encode()
GZIP_BODY = gzip.compress(GZIP_PAYLOAD, mtime=0)


def pattern(n: int) -> bytes:
    """Deterministic bytes so a test can hash what it expects without holding it twice."""
    block = bytes(range(256)) * 256  # 64 KiB
    full, rest = divmod(n, len(block))
    return block * full + block[:rest]


def pattern_sha256(n: int) -> str:
    h, block = hashlib.sha256(), bytes(range(256)) * 256
    full, rest = divmod(n, len(block))
    for _ in range(full):
        h.update(block)
    h.update(block[:rest])
    return h.hexdigest()


@dataclass
class UpstreamState:
    cancelled: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    peers: set[int] = field(default_factory=set)


def build_app(state: UpstreamState) -> web.Application:
    async def echo(req: web.Request) -> web.Response:
        h, n = hashlib.sha256(), 0
        async for chunk in req.content.iter_chunked(65536):
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"method": req.method, "path_qs": req.raw_path,
                                  "headers": [[k.decode(), v.decode()] for k, v in req.raw_headers],
                                  "body_len": n, "body_sha256": h.hexdigest()})

    async def stream_pattern(req: web.Request, *, chunked: bool) -> web.StreamResponse:
        size = int(req.query.get("size", "0"))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = size
        await resp.prepare(req)
        if req.method == "HEAD":
            return resp
        block, sent = bytes(range(256)) * 256, 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            await resp.write(piece)
            sent += len(piece)
        await resp.write_eof()
        return resp

    async def big(req: web.Request) -> web.StreamResponse:
        return await stream_pattern(req, chunked=True)

    async def sized(req: web.Request) -> web.StreamResponse:
        return await stream_pattern(req, chunked=False)

    async def gz(req: web.Request) -> web.Response:
        return web.Response(body=GZIP_BODY, headers={"Content-Encoding": "gzip",
                                                      "Content-Type": "application/json"})

    async def slow(req: web.Request) -> web.Response:
        await asyncio.sleep(float(req.query.get("delay", "1")))
        return web.json_response({"slept": float(req.query.get("delay", "1"))})

    async def hang(req: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    async def reset(req: web.Request) -> web.Response:
        assert req.transport is not None
        req.transport.abort()
        await asyncio.sleep(0.1)
        return web.Response()

    async def reset_mid(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = 1_000_000
        await resp.prepare(req)
        await resp.write(b"x" * 100_000)
        await asyncio.sleep(0.05)
        assert req.transport is not None
        req.transport.abort()
        return resp

    async def peer(req: web.Request) -> web.Response:
        port = req.transport.get_extra_info("peername")[1] if req.transport else 0
        state.peers.add(port)
        return web.json_response({"port": port})

    async def hop(req: web.Request) -> web.Response:
        return web.Response(text="{}", content_type="application/json",
                            headers={"Keep-Alive": "timeout=5", "X-Private": "drop-me",
                                     "Connection": "X-Private", "Proxy-Authenticate": "Basic",
                                     "Trailer": "X-Checksum", "X-Kept": "yes"})

    async def events(req: web.Request) -> web.Response:
        state.seen.append(req.path_qs)
        try:
            async for _ in req.content.iter_chunked(65536):
                pass
            await asyncio.sleep(float(req.query.get("delay", "5")))
        except (asyncio.CancelledError, ConnectionResetError):
            state.cancelled.append(req.path_qs)
            raise
        return web.json_response({"ok": True})

    async def early(req: web.Request) -> web.Response:
        """Answers after ``?read=N`` bytes of the upload, without the rest (a server refusing a
        too-large body)."""
        await req.content.readexactly(int(req.query.get("read", "0")))
        return web.json_response({"error": "payload too large"}, status=413)

    app = web.Application(client_max_size=1024**3, handler_args={"max_field_size": 65536})
    for path, fn in [("/echo", echo), ("/big", big), ("/sized", sized), ("/gzip", gz),
                     ("/slow", slow), ("/hang", hang), ("/reset", reset), ("/reset-mid", reset_mid),
                     ("/peer", peer), ("/hop", hop), ("/events", events), ("/early", early)]:
        app.router.add_route("*", path, fn)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def start_upstream(host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int, UpstreamState]:
    state = UpstreamState()
    runner = web.AppRunner(build_app(state), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1], state


if __name__ == "__main__":  # python -m tests.support.upstream 4467
    import sys

    web.run_app(build_app(UpstreamState()), host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 4467)
