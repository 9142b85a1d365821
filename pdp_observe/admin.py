"""The admin listener: /healthz, /metrics, the OTLP receiver and the management API (/api/v1).

It runs on its own port (loopback by default) so a scrape or a health probe never competes
with the traffic listener's accept queue.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def build_admin_app(registry: CollectorRegistry, health: Callable[[], dict[str, Any]],
                    extra_routes: Iterable[web.RouteDef] = (),
                    subapps: Iterable[tuple[str, web.Application]] = ()) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response(health())

    async def metrics(request: web.Request) -> web.Response:
        if "application/openmetrics-text" in request.headers.get("Accept", ""):
            body, ctype = generate_openmetrics(registry), OPENMETRICS_TYPE
        else:
            body, ctype = generate_latest(registry), PROMETHEUS_TYPE
        return web.Response(body=body, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(list(extra_routes))
    for prefix, sub in subapps:
        app.add_subapp(prefix, sub)
    return app
