"""The secret key of a development checkout (DEBUG=1 and no SECRET_KEY): random, made on first
use and kept in a file git ignores, so that every checkout has its own and keeps it across
restarts (tokens stay valid, and every instance started from the checkout shares it)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# Earlier versions signed with this key, published in their source, whenever DEBUG=1 had no
# SECRET_KEY: a token made with it is refused everywhere now (settings.py refuses the key).
PUBLIC_DEVELOPMENT_KEY = "django-insecure-development-only-key-do-not-use-in-production"


def development_secret_key(path: Path) -> str:
    """The key kept in `path`, made (50 random URL-safe bytes, mode 0600) if there is none yet.
    Instances starting at the same moment all end up with the first one written. Where the file
    cannot be written (a read-only checkout), a key for this process only."""
    existing = _read(path)
    if existing:
        return existing
    key = secrets.token_urlsafe(50)
    draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(key + "\n")
        try:
            os.link(draft, path)  # Atomic, and never over a key another process just wrote.
        except FileExistsError:
            if not _read(path):  # An empty file left behind: replace it.
                os.replace(draft, path)
                return key
            return _read(path)
        finally:
            draft.unlink(missing_ok=True)
    except OSError:
        return key
    return key


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""
