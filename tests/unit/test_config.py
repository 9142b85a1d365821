import dataclasses

import pytest

from pdp_observe.cli import build_parser
from pdp_observe.config import Settings, env_name, from_sources, parse_duration, parse_hostport, parse_size


@pytest.mark.parametrize("text,value", [("1MiB", 1048576), ("512KiB", 524288), ("2GB", 2_000_000_000),
                                        ("1048576", 1048576), ("0", 0), ("off", 0), ("1.5 MiB", 1572864)])
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text,value", [("7d", 604800), ("30s", 30), ("5m", 300), ("250ms", 0.25), ("2", 2)])
def test_durations(text, value):
    assert parse_duration(text) == value


def test_bad_values_name_the_flag_or_env():
    args = build_parser().parse_args(["proxy", "--upstream", "http://x:1", "--max-db-size", "lots"])
    with pytest.raises(ValueError, match="--max-db-size: not a size"):
        from_sources(args, env={})
    with pytest.raises(ValueError, match="PDP_MAX_AGE: not a duration"):
        from_sources(None, env={"PDP_MAX_AGE": "forever"})


def test_flag_beats_env_beats_default():
    args = build_parser().parse_args(["proxy", "--listen", "127.0.0.1:1000"])
    s = from_sources(args, env={"PDP_LISTEN": "127.0.0.1:2000", "PDP_UPSTREAM": "http://u:1",
                                "PDP_PRESERVE_HOST": "true", "PDP_REDACT_HEADER": "A,B"})
    assert s.listen == "127.0.0.1:1000" and s.upstream == "http://u:1"
    assert s.preserve_host is True and s.redact_header == ["A", "B"]
    assert s.max_db_size == Settings().max_db_size


def test_hostports():
    assert parse_hostport("[::1]:4466") == ("::1", 4466)
    assert parse_hostport(":9") == ("127.0.0.1", 9)
    with pytest.raises(ValueError):
        parse_hostport("localhost")


def test_validate_requires_upstream_url():
    with pytest.raises(ValueError, match="--upstream is required"):
        Settings().validate()
    with pytest.raises(ValueError, match="http:// or https://"):
        Settings(upstream="127.0.0.1:4467").validate()


def test_every_setting_has_a_flag_and_env_in_help():
    help_text = build_parser()._subparsers._group_actions[0].choices["proxy"].format_help()  # type: ignore[union-attr]
    for f in dataclasses.fields(Settings):
        assert "--" + f.name.replace("_", "-") in help_text
        assert env_name(f.name) in help_text


def test_store_process_is_auto_unless_told():
    """`auto` (the default) decides from the recorder's CPUs; a flag or PDP_STORE_PROCESS wins."""
    from pdp_observe.config import store_process_wanted

    parse = lambda *argv: from_sources(build_parser().parse_args(["proxy", *argv]), env={})  # noqa: E731
    assert parse().store_process is None
    assert parse("--store-process").store_process is True
    assert parse("--no-store-process").store_process is False
    assert from_sources(None, env={"PDP_STORE_PROCESS": "auto"}).store_process is None
    assert from_sources(None, env={"PDP_STORE_PROCESS": "off"}).store_process is False
    with pytest.raises(ValueError, match="PDP_STORE_PROCESS"):
        from_sources(None, env={"PDP_STORE_PROCESS": "sometimes"})
    assert [store_process_wanted(None, n) for n in (1, 2, 3, 8)] == [False, False, True, True]
    assert store_process_wanted(True, 1) and not store_process_wanted(False, 8)
    assert "default: auto" in " ".join(build_parser()._subparsers._group_actions[0].choices["proxy"].format_help().split())
