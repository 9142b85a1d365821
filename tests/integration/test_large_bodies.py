"""50 MB each way through a real proxy process: streamed, byte-exact, memory bounded."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import aiohttp
import pytest

from pdp_observe.store import StoreReader
from tests.support.upstream import pattern, pattern_sha256

SIZE = 50 * 1024 * 1024


@pytest.fixture
def upstream_process(tmp_path):
    from tests.conftest import ROOT, free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.upstream", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket

    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
async def test_50mb_both_ways_streamed_with_bounded_memory(upstream_process, proxy_process, tmp_path):
    proxy = proxy_process(upstream_process, tmp_path / "c.db")
    base_rss = proxy.rss_peak_kib()

    async def gen():
        block = pattern(1024 * 1024)
        for _ in range(SIZE // len(block)):
            yield block

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.post(f"{proxy.url}/echo", data=gen()) as r:  # chunked upload, no length
            got = await r.json()
        assert got["body_len"] == SIZE and got["body_sha256"] == pattern_sha256(SIZE)

        h, n = hashlib.sha256(), 0
        async with s.get(f"{proxy.url}/big?size={SIZE}") as r:
            async for chunk in r.content.iter_chunked(1 << 20):
                h.update(chunk)
                n += len(chunk)
        assert n == SIZE and h.hexdigest() == pattern_sha256(SIZE)

    grew_mib = (proxy.rss_peak_kib() - base_rss) / 1024
    print(f"peak RSS growth: {grew_mib:.1f} MiB (base {base_rss / 1024:.0f} MiB)")
    proxy.stop()
    # two 1 MiB capture prefixes and socket buffers, not 100 MB of bodies
    assert grew_mib < 40, f"proxy peak RSS grew by {grew_mib:.0f} MiB moving 2x50 MB"

    reader = StoreReader(str(tmp_path / "c.db"))
    rows = reader.last(2)
    up, down = (reader.get(r.id) for r in rows)
    assert up.request.body.size == SIZE and up.request.body.truncated
    assert up.request.body.sha256 == pattern_sha256(SIZE)
    assert len(up.request.body.data) == 1024 * 1024
    assert down.response.body.size == SIZE and down.response.body.sha256 == pattern_sha256(SIZE)
