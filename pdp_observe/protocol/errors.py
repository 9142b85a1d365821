"""Error facts shared by the decoders: Prisma user-facing errors, wherever they appear.

The engines wrap one ``user_facing_error`` (UFE) per failure in ``{"errors": [...]}`` (HTTP
200), put bare UFEs in the bodies of the transaction endpoints (404/422/504) and of protocol
mismatches (422), and the Data Proxy passes both through. Only the UFE is decoded: the sibling
``error`` string is a free-form Rust ``Debug`` dump that changes between versions
(protocols.md A.5). :func:`sniff_code` rescues the code from a body cut by the capture limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..exchange import Operation
from ._wire import MAX_TEXT, as_dict, as_list, as_str, bounded


@dataclass(slots=True)
class ErrorInfo:
    """One decoded error: the stable code, a message for people, and the structured meta."""

    code: str | None
    message: str | None
    meta: Any = None


def from_ufe(ufe: Any) -> ErrorInfo | None:
    """A user-facing error object (``{is_panic, message, meta?, error_code?}``), if it is one."""
    if not isinstance(ufe, dict) or not ("message" in ufe or "error_code" in ufe):
        return None
    return ErrorInfo(as_str(ufe.get("error_code")), as_str(ufe.get("message")), ufe.get("meta"))


def engine_errors(body: Any) -> list[ErrorInfo]:
    """The errors of an engine ``{"errors": [{error, user_facing_error}]}`` body, in order."""
    found = []
    for item in as_list(as_dict(body).get("errors")):
        info = from_ufe(as_dict(item).get("user_facing_error"))
        found.append(info or ErrorInfo(None, None))
    return found


def is_bare_ufe(body: Any) -> bool:
    """A UFE sent as the whole body (itx endpoints, 422 protocol mismatch, 408 timeout)."""
    return isinstance(body, dict) and "is_panic" in body and "message" in body


def apply(op: Operation, info: ErrorInfo | None) -> None:
    """Copy an error onto the Operation (the first error wins; later ones are kept as codes)."""
    if info is None:
        return
    if op.error_code is None and op.error_message is None:
        op.error_code = info.code
        op.error_message = info.message[:MAX_TEXT] if info.message else None
        if info.meta not in (None, {}, []):
            op.details["error_meta"] = bounded(info.meta)


def apply_all(op: Operation, infos: list[ErrorInfo]) -> None:
    """Apply the first error; list every code when a body carries several."""
    if infos:
        apply(op, infos[0])
    if len(infos) > 1:
        op.details["error_codes"] = [i.code for i in infos]


_SNIFF_START = re.compile(rb'\s*\{\s*"(?:errors|code|is_panic|error)"')
_SNIFF_CODE = re.compile(rb'"(?:error_code|code)"\s*:\s*"(P\d{4})"')


def sniff_code(raw: bytes) -> str | None:
    """The Prisma code of an error body that is not valid JSON (cut by the capture limit).

    Only bodies that *start* like an error are searched, so row data that happens to contain
    the text ``"code":"P2002"`` is never mistaken for an error.
    """
    if not _SNIFF_START.match(raw):
        return None
    match = _SNIFF_CODE.search(raw, 0, 64 * 1024)
    return match.group(1).decode() if match else None
