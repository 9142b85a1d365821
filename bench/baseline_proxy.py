"""Bare aiohttp reverse proxy: the "C" baseline of bench/proxy_overhead.py (no recording).

    python bench/baseline_proxy.py --listen 127.0.0.1:8001 --upstream http://127.0.0.1:8000 [--uvloop]

web.Application + one ClientSession (default TCPConnector, FIFO pool, as a typical aiohttp
proxy would be written); request and response bodies are streamed through chunk by chunk.
"""
import argparse
from aiohttp import ClientSession, TCPConnector, web

HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
       "upgrade", "host", "proxy-authenticate", "proxy-authorization"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:8001")
    ap.add_argument("--upstream", default="http://127.0.0.1:8000")
    ap.add_argument("--uvloop", action="store_true")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    upstream = a.upstream.rstrip("/")

    async def on_startup(app):
        app["s"] = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)

    async def on_cleanup(app):
        await app["s"].close()

    async def handle(req: web.Request) -> web.StreamResponse:
        hdrs = {k: v for k, v in req.headers.items() if k.lower() not in HOP}
        body = req.content if req.body_exists else None
        async with req.app["s"].request(req.method, upstream + req.path_qs, headers=hdrs, data=body,
                                        allow_redirects=False, skip_auto_headers=("User-Agent", "Accept-Encoding")) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason,
                                      headers={k: v for k, v in up.headers.items() if k.lower() not in HOP})
            await resp.prepare(req)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    loop = None
    if a.uvloop:
        import uvloop
        loop = uvloop.new_event_loop()
    web.run_app(app, host=host, port=int(port), access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
