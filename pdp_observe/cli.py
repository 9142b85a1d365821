"""``pdp-observe``: one command, a subcommand per job.

Errors a person can fix (bad flag, missing capture file, busy port) exit with status 2 and
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import __version__
from .config import Settings, add_arguments, from_sources
from .exchange import operation_from_dict
from .filterlang import FILTER_HELP
from .query import exchange_json, load_exchange
from .store import Filter, StoreError, StoreReader
from .views import drop_summary, row_json, show, table

DESCRIPTION = """\
pdp_observe: a recording proxy for the HTTP hop between a Prisma Client and a Prisma server
(query engine, Data Proxy, or Prisma 7 query-plan executor). It forwards every request
untouched and records each one to a SQLite capture file you can list and inspect.

  pdp-observe demo        # a real Prisma 7 stack with the sidecar in between, captures shown
  pdp-observe proxy --listen 127.0.0.1:4466 --upstream http://127.0.0.1:4467 --db captures.db
  pdp-observe ls --db captures.db --last 20
  pdp-observe show --db captures.db <id>
  pdp-observe tui         # live view of a running sidecar (or: tui --db captures.db)
"""


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=os.environ.get("PDP_DB", "captures.db"),
                   help="capture file to read [env PDP_DB; default: captures.db]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdp-observe", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pdp-observe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("proxy", help="run the recording proxy in front of a Prisma server",
                       description="Forward every request from --listen to --upstream untouched and "
                       "record each exchange to --db. Every flag can also be set with the PDP_* "
                       "environment variable named in its help. Stop with Ctrl-C (captures in "
                       "flight are written before exit).")
    add_arguments(p, Settings)

    p = sub.add_parser("demo", help="run a real Prisma 7 stack with the sidecar in between and show the captures",
                       description="Install the pinned Prisma 7.2 npm packages (first run only; needs Node >= 20 "
                       "and npm), start `prisma dev` (the Prisma 7 query-plan executor over an embedded PGlite "
                       "database), put pdp_observe in front of it (127.0.0.1:4466, admin :9466, or free ports), "
                       "run a small workload through a real Prisma Client and show what was recorded. "
                       "Everything it starts is stopped on exit and on Ctrl-C.")
    p.add_argument("--db", default="pdp-demo.db", help="capture file to (re)create (default pdp-demo.db)")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the stack and the sidecar running after the workload, until Ctrl-C")

    p = sub.add_parser("ls", help="list recorded exchanges",
                       description="List the newest recorded exchanges, oldest first.",
                       epilog=FILTER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _db_arg(p)
    p.add_argument("--last", type=int, default=20, metavar="N", help="how many (default 20; 0 = all)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line (stable field names: id, ts, method, path, status, "
                   "duration_ms, req_bytes, resp_bytes, failure, truncated, protocol, kind, model, "
                   "action, fingerprint, txn, error_code, sql; operations for a batch)")
    p.add_argument("--model", help="only this Prisma model (e.g. User)")
    p.add_argument("--action", help="only this action (e.g. findMany, createOne)")
    p.add_argument("--status", help="HTTP status: 500, >=400, 4xx")
    p.add_argument("--code", help="Prisma error code (e.g. P2002)")
    p.add_argument("--min-ms", type=float, metavar="MS", help="only exchanges that took at least MS")
    p.add_argument("--txn", help="only this interactive transaction (id or prefix)")
    p.add_argument("--filter", metavar="EXPR", help="only exchanges matching EXPR, e.g. "
                   "'model:User ms:>250 -is:error' (language below; ANDed with the flags above)")

    p = sub.add_parser("show", help="show one exchange: headers (redacted) and bodies",
                       description="Show one exchange in full. The ID column of `ls` (the id's last digits), "
                       "the whole id or any unique prefix of it works.")
    _db_arg(p)
    p.add_argument("id", help="exchange id as `ls` prints it, the whole id, or a unique prefix")
    p.add_argument("--json", action="store_true", help="the exchange as one JSON object")

    p = sub.add_parser("tui", help="live terminal UI: attach to a running sidecar, or open a capture file",
                       description="Browse exchanges live: attach to a sidecar's management API "
                       "(--connect, default http://127.0.0.1:9466) or open a capture file offline (--db). "
                       "Press ? inside for keys and the filter language.")
    p.add_argument("--connect", metavar="URL", default=os.environ.get("PDP_ADMIN_URL"),
                   help="the sidecar's admin listener [env PDP_ADMIN_URL; default http://127.0.0.1:9466]")
    p.add_argument("--token", default=os.environ.get("PDP_ADMIN_TOKEN"),
                   help="bearer token of the management API [env PDP_ADMIN_TOKEN]")
    p.add_argument("--db", help="open this capture file instead of attaching (offline; no replay)")
    return parser


def cmd_proxy(args: argparse.Namespace) -> int:
    from .sidecar import run  # noqa: PLC0415 - keep `ls`/`show` start-up light

    settings = from_sources(args)
    settings.validate()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(settings)
    except OSError as exc:
        raise SystemExit(f"pdp-observe: cannot listen: {exc}") from None


def cmd_ls(args: argparse.Namespace) -> int:
    flt = Filter(model=args.model, action=args.action, status=args.status, code=args.code,
                 min_ms=args.min_ms, txn=args.txn, expr=args.filter)
    flt.where()  # a bad --filter is reported before the capture file is opened
    reader = StoreReader(args.db)
    try:
        rows = reader.last(args.last, flt)
        summary = drop_summary(reader.counters())
        if args.json:
            for r in rows:
                record = reader.record(r.id) or {}
                print(json.dumps(row_json(r, operation_from_dict(record.get("operation")), record,
                                          reader.pressure(r.id)), separators=(",", ":")))
        else:
            print(table(rows))
            total = reader.count()
            print(f"\n{len(rows)} of {total} exchanges in {args.db}")
        if summary:
            print(f"note: {summary}", file=sys.stderr)
    finally:
        reader.close()
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reader = StoreReader(args.db)
    try:
        ex, received = load_exchange(reader, args.id)
    finally:
        reader.close()
    if args.json:
        print(json.dumps(exchange_json(ex, received), indent=2))
    else:
        print(show(ex, received))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    return run_demo(args.db, args.keep_running)


def cmd_tui(args: argparse.Namespace) -> int:
    from .tui import run  # noqa: PLC0415 - Textual loads only for this command

    if args.db and not os.path.exists(args.db):
        raise StoreError(f"no capture file at {args.db!r}")
    return run(connect=args.connect, token=args.token, db=args.db)


COMMANDS = {"proxy": cmd_proxy, "demo": cmd_demo, "ls": cmd_ls, "show": cmd_show, "tui": cmd_tui}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except (StoreError, ValueError) as exc:
        print(f"pdp-observe {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pdp-observe ls | head`
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
