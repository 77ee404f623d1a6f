"""Reactions: what an emoji may be, and the `{emoji: [user_id, ...]}` map of each message.

Emoji are stored as sent (any 1..32 characters without white space: `👍`, `:tada:`), in the
order they were first used on a message, each with its users in the order they reacted.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence

from django.db import connection

from messaging.models import EMOJI_MAX_LENGTH, Reaction

MAX_EMOJI_PER_MESSAGE = 20

Reactions = Mapping[str, Sequence[int]]

# Control characters (NUL included: PostgreSQL cannot store it), lone surrogates and white
# space. (Bytes that are not UTF-8 are refused before, from the path as sent: messaging.views.)
_REFUSED_CATEGORIES = {"Cc", "Cs", "Zs", "Zl", "Zp"}


def emoji_problem(emoji: str) -> str | None:
    """Why `emoji` is not a valid reaction, or None when it is."""
    if not 1 <= len(emoji) <= EMOJI_MAX_LENGTH:
        return f"An emoji is 1 to {EMOJI_MAX_LENGTH} characters."
    for char in emoji:
        if char.isspace() or unicodedata.category(char) in _REFUSED_CATEGORIES:
            return "An emoji may not contain white space or control characters."
    return None


_REACTIONS_SQL = f"""
SELECT message_id, emoji, user_id FROM {Reaction._meta.db_table}
WHERE message_id IN ({{ids}}) ORDER BY message_id, id
"""


def reactions_by_message(message_ids: Iterable[int]) -> dict[int, dict[str, list[int]]]:
    """The reactions of each of these messages (messages without any are absent), in one
    query served by the (message, emoji, user) unique index."""
    ids = list(message_ids)
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_REACTIONS_SQL.format(ids=", ".join(["%s"] * len(ids))), ids)
        rows = cursor.fetchall()
    found: dict[int, dict[str, list[int]]] = {}
    for message_id, emoji, user_id in rows:
        found.setdefault(message_id, {}).setdefault(emoji, []).append(user_id)
    return found
