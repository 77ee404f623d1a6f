"""Log lines as JSON objects on stdout, with secrets scrubbed from every line.

One object per line (`time`, `level`, `logger`, `message`, then context such as `status_code`,
`method`, `path`, `exception`), so a log shipper can index the fields without parsing text.

The WebSocket takes its access token in `?token=`, and a few libraries put URLs, headers or
connection strings into their messages: every line goes through `scrub_secrets` before it is
written, whatever logger produced it. Request objects are never written as their repr, which
carries the query string; only their method and path (never the query) are.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

REDACTED = "[redacted]"

_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # A JWT anywhere: three base64url parts, the first one a JSON header ("eyJ" = '{"').
    (re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*"), REDACTED),
    # Query strings and form bodies: token=..., access=..., password=...
    (
        re.compile(
            r"(?i)\b(token|access|refresh|password|secret|key|signature)=[^&\s\"',;]+",
        ),
        rf"\1={REDACTED}",
    ),
    # JSON bodies: "password": "...", "refresh": "..."
    (
        re.compile(r'(?i)("(?:token|access|refresh|password|secret)"\s*:\s*)"[^"]*"'),
        rf'\1"{REDACTED}"',
    ),
    # Authorization headers.
    (re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+"), rf"\1 {REDACTED}"),
    # Passwords in connection URLs: postgres://user:password@host, redis://:password@host
    (re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@"), rf"\1{REDACTED}@"),
]

# Attributes every LogRecord has; anything else was passed by the caller in `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def scrub_secrets(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _json_safe(value: Any) -> Any:
    """Extra values as JSON: numbers, strings, booleans and None as they are, else a string."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub_secrets(str(value))


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub_secrets(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name in _RECORD_ATTRIBUTES or name.startswith("_"):
                continue
            if name == "request":  # Django's request logging: method and path, no query.
                entry["method"] = getattr(value, "method", None)
                entry["path"] = getattr(value, "path", None)
            else:
                entry[name] = _json_safe(value)
        if record.exc_info:
            entry["exception"] = scrub_secrets(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = scrub_secrets(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


class ScrubbedFormatter(logging.Formatter):
    """The plain-text format for development, with the same scrubbing as the JSON one."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub_secrets(super().format(record))
