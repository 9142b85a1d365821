"""Secrets sent through the proxy never reach the capture file, the CLI output or the log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp

from pdp_observe.store import Unpacker, unpack

from tests.conftest import run_cli

SECRETS = {
    "bearer": "sk_live_bearer_7f3a9c",
    "cookie": "sess-cookie-5521",
    "api_key": "key_in_query_8812",
    "dsn_key": "key_in_body_url_4471",
    "db_password": "pg-pass-0093",
    "custom_header": "hdr-secret-3310",
    "custom_param": "sig-secret-6620",
    "proxy_auth": "proxy-secret-1177",
}


def file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def all_blob_text(db: Path) -> bytes:
    """Every column of every row, blobs decompressed: what a reader of the file could see."""
    conn = sqlite3.connect(db)
    zd = Unpacker(conn)  # with the dictionary a blob names, when it names one
    out = []
    for row in conn.execute("SELECT * FROM exchanges"):
        for v in row:
            if isinstance(v, bytes):
                out.append(unpack(v, zd))
            elif v is not None:
                out.append(str(v).encode())
    conn.close()
    return b"\n".join(out)


async def test_secrets_never_reach_disk_cli_or_log(upstream, proxy_process, tmp_path):
    db = tmp_path / "c.db"
    proxy = proxy_process(upstream[0], db, "--redact-header", "X-Api-Secret", "--redact-param", "sig")
    body = (
        '{"datasource":"prisma+postgres://localhost:51213/?api_key=%s",'
        '"db":"postgresql://app:%s@db:5432/app"}' % (SECRETS["dsn_key"], SECRETS["db_password"])
    )
    headers = {
        "Authorization": f"Bearer {SECRETS['bearer']}",
        "Cookie": f"session={SECRETS['cookie']}",
        "X-Api-Secret": SECRETS["custom_header"],
        "Proxy-Authorization": f"Basic {SECRETS['proxy_auth']}",
        "Content-Type": "application/json",
    }
    async with aiohttp.ClientSession() as s:
        url = f"{proxy.url}/echo?api_key={SECRETS['api_key']}&sig={SECRETS['custom_param']}&keep=1"
        async with s.post(url, data=body, headers=headers) as r:
            assert r.status == 200
            echoed = await r.text()
    # the upstream really received them (the proxy redacts records, not traffic)
    assert SECRETS["bearer"] in echoed and SECRETS["custom_header"] in echoed
    log = proxy.stop()

    outputs = [
        run_cli("ls", "--db", str(db)).stdout,
        run_cli("ls", "--db", str(db), "--json").stdout,
    ]
    ex_id = outputs[1].split('"id":"')[1][:16]
    outputs += [run_cli("show", "--db", str(db), ex_id).stdout,
                run_cli("show", "--db", str(db), ex_id, "--json").stdout]
    haystacks = {"file": file_bytes(db), "rows": all_blob_text(db), "log": log.encode(),
                 **{f"cli{i}": o.encode() for i, o in enumerate(outputs)}}
    for where, hay in haystacks.items():
        for name, secret in SECRETS.items():
            assert secret.encode() not in hay, f"{name} leaked into {where}"
    shown = outputs[2]
    assert "keep=1" in shown and "Authorization: Bearer [REDACTED:" in shown
    assert "api_key=REDACTED-" in shown and "sig=REDACTED-" in shown
    assert "X-Api-Secret: [REDACTED:" in shown


async def test_fingerprints_tell_keys_apart(sidecar):
    async with aiohttp.ClientSession() as s:
        for key in ("alpha", "beta", "alpha"):
            async with s.get(f"http://127.0.0.1:{sidecar.port}/echo", headers={"Authorization": f"Bearer {key}"}) as r:
                await r.read()
    from tests.conftest import await_stored
    from pdp_observe.store import StoreReader

    await await_stored(sidecar, 3)
    reader = StoreReader(sidecar.settings.db)
    auths = [dict(reader.get(r.id).request.headers)["Authorization"] for r in reader.last(3)]
    assert auths[0] == auths[2] != auths[1]
    assert all(a.startswith("Bearer [REDACTED:") for a in auths)
