"""The CLI as a user meets it: help, ls/show on a real capture, clear errors."""

from __future__ import annotations

import json

import aiohttp

from tests.conftest import run_cli


def test_help_explains_every_command():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("proxy", "ls", "show"):
        assert cmd in res.stdout
    proxy_help = run_cli("proxy", "--help").stdout
    assert "PDP_UPSTREAM" in proxy_help and "--capture-body-limit" in proxy_help and "default: 1MiB" in proxy_help


def test_proxy_without_upstream_is_a_clear_error():
    res = run_cli("proxy", env={"PDP_UPSTREAM": ""})
    assert res.returncode == 2 and "--upstream is required" in res.stderr and "Traceback" not in res.stderr


def test_ls_on_missing_file_is_a_clear_error(tmp_path):
    res = run_cli("ls", "--db", str(tmp_path / "nope.db"))
    assert res.returncode == 2 and "no capture file" in res.stderr
    assert not (tmp_path / "nope.db").exists()


async def test_ls_and_show_on_real_traffic(upstream, proxy_process, tmp_path):
    db = tmp_path / "c.db"
    proxy = proxy_process(upstream[0], db)
    async with aiohttp.ClientSession() as s:
        for i in range(25):
            async with s.post(f"{proxy.url}/echo?n={i}", json={"modelName": "User", "action": "findMany", "n": i}) as r:
                await r.read()
        async with s.get(f"{proxy.url}/gzip", headers={"Accept-Encoding": "gzip"}) as r:
            await r.read()
    proxy.stop()

    table = run_cli("ls", "--db", str(db), "--last", "5").stdout.splitlines()
    assert table[0].split() == ["ID", "TIME", "METHOD", "PATH", "OPERATION", "STATUS", "CODE", "MS", "SQL", "TXN", "REQ", "RESP"]
    assert len(table) == 1 + 5 + 2 and "5 of 26 exchanges" in table[-1]
    assert "/gzip" in table[5]

    lines = run_cli("ls", "--db", str(db), "--json", "--last", "0").stdout.splitlines()
    objs = [json.loads(line) for line in lines]
    assert len(objs) == 26
    required = {"id", "ts", "method", "path", "status", "duration_ms", "req_bytes", "resp_bytes", "failure", "truncated"}
    assert all(required <= o.keys() for o in objs)
    assert [o["path"] for o in objs[:3]] == ["/echo?n=0", "/echo?n=1", "/echo?n=2"]
    assert all(o["ts"] <= p["ts"] for o, p in zip(objs, objs[1:]))

    # the id column `ls` prints is what `show` takes; ids are time-ordered, so a short prefix
    # is shared by everything recorded in the same moment and is reported as ambiguous
    assert [row.split()[0] for row in table[1:6]] == [o["id"][-8:] for o in objs[-5:]]
    shown = run_cli("show", "--db", str(db), table[1].split()[0]).stdout
    assert "> POST /echo?n=21 HTTP/1.1" in shown
    shown = run_cli("show", "--db", str(db), objs[0]["id"]).stdout
    assert '"modelName": "User"' in shown  # pretty JSON body
    assert "> POST /echo?n=0 HTTP/1.1" in shown and "< 200 OK" in shown
    assert [o["id"] for o in objs] == sorted(o["id"] for o in objs)  # id order is record order
    vague = run_cli("show", "--db", str(db), objs[0]["id"][:4])
    assert vague.returncode == 2 and "ambiguous" in vague.stderr
    gz = run_cli("show", "--db", str(db), objs[-1]["id"]).stdout
    assert "content-encoding gzip (decoded below)" in gz and '"findManyUser"' in gz

    bad = run_cli("show", "--db", str(db), "zzzz")
    assert bad.returncode == 2 and "not an exchange id" in bad.stderr
