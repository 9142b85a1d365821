from pdp_observe.redact import Redactor, fingerprint, mask


def test_headers_keep_scheme_and_fingerprint():
    r = Redactor()
    assert r.header_value("authorization", "Bearer abc") == f"Bearer [REDACTED:{fingerprint('abc')}]"
    assert r.header_value("Cookie", "a=b") == f"[REDACTED:{fingerprint('a=b')}]"
    assert r.header_value("Content-Type", "application/json") == "application/json"


def test_query_params_in_paths_and_body_urls():
    r = Redactor.with_extra(params=["sig"])
    out = r.text("/v1/x?api_key=K1&x=1&APIKEY=K2&token=T&sig=S&keep=api_key")
    for secret in ("K1", "K2", "=T", "=S"):
        assert secret not in out.replace("REDACTED-", "")
    assert "x=1" in out and "keep=api_key" in out
    body = r.text('{"url":"prisma+postgres://localhost:5/?api_key=eyJhbGci.xyz"}')
    assert "eyJhbGci" not in body and body.endswith('REDACTED-' + fingerprint("eyJhbGci.xyz") + '"}')


def test_connection_string_passwords_and_leaked_bearer_tokens():
    r = Redactor()
    out = r.text('postgresql://app:hunter2@db:5432/app and "Bearer sk_live_x1"')
    assert "hunter2" not in out and "sk_live_x1" not in out
    assert "postgresql://app:REDACTED-" in out and "@db:5432/app" in out


def test_redaction_is_idempotent_and_binary_safe():
    r = Redactor()
    once = r.text("/q?api_key=abc")
    assert r.text(once) == once
    blob = b"\xff\xfe api_key=zzz \x00"
    assert b"zzz" not in r.body(blob) and r.body(blob).startswith(b"\xff\xfe")
    assert r.body(b"no secrets here") == b"no secrets here"


def test_secret_names_quoted_in_json_bodies():
    r = Redactor.with_extra(headers=["X-Api-Secret"])
    out = r.text('{"headers": [["Cookie", "s=1"], ["X-Api-Secret", "v\\"2"]], "api_key": "k3", "name": "ok"}')
    assert "s=1" not in out and 'v\\"2' not in out and "k3" not in out
    assert '"name": "ok"' in out and '["Cookie", "[REDACTED:' in out


def test_raw_header_pairs_memo_keeps_every_secret_apart():
    """Captured header pairs (bytes) are decoded and redacted through a bounded memo: two
    tokens stay two fingerprints, a custom secret header is masked, latin-1 bytes survive,
    and past the memo's bound results stay the same."""
    r = Redactor.with_extra(headers=["X-Api-Secret"])
    a = r.raw_header_pairs([(b"Authorization", b"Bearer token-one"), (b"X-Api-Secret", b"s3cr3t"),
                            (b"Accept", b"caf\xe9"), (b"content-encoding", b"gzip")])
    b = r.raw_header_pairs([(b"authorization", b"Bearer token-two")])
    assert a[0] == ("Authorization", f"Bearer {mask('token-one')}")
    assert a[1] == ("X-Api-Secret", mask("s3cr3t"))
    assert a[2:] == [("Accept", "café"), ("content-encoding", "gzip")]
    assert b[0][1] != a[0][1] and "token-two" not in b[0][1]
    for i in range(3000):  # many distinct names and tokens: the memo clears, results do not change
        assert r.raw_header_pairs([(f"X-{i}".encode(), b"v"), (b"Authorization", f"Bearer t{i}".encode())]) == [
            (f"X-{i}", "v"), ("Authorization", f"Bearer {mask(f't{i}')}")]
    assert len(r._names) <= 1024 and len(r._masked) <= 1024
    assert r.raw_header_pairs([(b"Authorization", b"Bearer token-one")]) == [a[0]]
    assert r.raw_header_pairs([("Authorization", "Bearer token-one")]) == [a[0]]  # str pairs too


def test_stem_scan_finds_exactly_what_substring_search_finds():
    """The one-regex prefilter of bodies must never miss a secret's name: it agrees with
    ``any(stem in body)`` on bodies made of the stems' own characters, stems cut and joined at
    every place (random but seeded), and with extra names a user adds."""
    import random

    from pdp_observe.redact import stem_scanner

    rng = random.Random(7)
    for r in (Redactor(), Redactor.with_extra(["X-Api-Secret", "x-z"], ["sig", "a.b"])):
        stems = r._stems
        scan = stem_scanner(stems)
        alphabet = sorted({c for s in stems for c in s} | set(b' "=:{}'))
        for _ in range(3000):
            parts = [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))]
            if rng.random() < 0.5:
                stem = rng.choice(stems)
                cut = rng.randint(0, len(stem))  # often a stem cut short: no match
                parts.append(stem[:cut] if rng.random() < 0.5 else stem)
            parts.append(bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 12))))
            body = b"".join(parts)
            assert (scan.search(body) is not None) == any(s in body for s in stems), body
    assert Redactor().body(b'{"where":{"TOKEN":"abc"}}') != b'{"where":{"TOKEN":"abc"}}'
    assert stem_scanner((b"", b"token")).search(b"nothing") is not None  # an empty name matches all
