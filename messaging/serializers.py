"""Input validation and output shapes, shared by the REST views and the WebSocket consumer.

`MessageTextField` is the one validator of a message's text, for both transports.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from accounts.serializers import UserSerializer
from chatproject.fields import StrictCharField
from messaging import events
from messaging.models import (
    CLIENT_ID_MAX_LENGTH,
    TEXT_MAX_LENGTH,
    TITLE_MAX_LENGTH,
    Chat,
    ChatKind,
    Message,
)
from messaging.reactions import emoji_problem

# Ids are PostgreSQL bigints: anything larger would be a database error, not a 404.
MAX_ID = 2**63 - 1


class MessageTextField(StrictCharField):
    """1..4096 code points, not only white space, no NUL; kept verbatim (never trimmed)."""

    default_error_messages = {"blank": "Message text may not be empty or only white space."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=TEXT_MAX_LENGTH, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        text = super().to_internal_value(data)
        if not text.strip():
            self.fail("blank")
        return text


class IdField(serializers.IntegerField):
    """A positive id that fits the database's bigint: a JSON number, not a string of one."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        super().__init__(max_value=MAX_ID, **kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str | bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class PositionField(serializers.IntegerField):
    """A position in a chat (`after`, `before`, `since_seq`): any integer from `min_value` up.
    One past every id or seq the database can hold means the same as the largest it can hold,
    so larger values are taken as that, not refused."""

    def to_internal_value(self, data: Any) -> int:
        return min(super().to_internal_value(data), MAX_ID)


# --- Output ---------------------------------------------------------------------------------------


class MessageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    chat_id = serializers.IntegerField()
    author_id = serializers.IntegerField()
    text = serializers.CharField(help_text="Empty for a deleted message (a tombstone).")
    created_at = serializers.DateTimeField()
    client_id = serializers.CharField(allow_null=True)
    seq = serializers.IntegerField(help_text="The chat's seq of this message's latest change.")
    edited_at = serializers.DateTimeField(allow_null=True)
    deleted = serializers.BooleanField()
    reactions = serializers.DictField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="emoji -> the ids of the users who reacted with it, in the order they did.",
    )

    def to_representation(self, instance: Message) -> dict[str, Any]:
        # The very shape the WebSocket events carry, from the same function; the reactions
        # in the order they were made (prefetched by `for_listing`).
        reactions: dict[str, list[int]] = {}
        for reaction in instance.reactions.all():
            reactions.setdefault(reaction.emoji, []).append(reaction.user_id)
        return events.message_data(instance, reactions)


class ReadCursorSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    message_id = serializers.IntegerField(allow_null=True, help_text="null: nothing read yet")


class ChatInfoSerializer(serializers.Serializer):
    """A chat as every member sees it (the `chat_updated` event carries this)."""

    id = serializers.IntegerField(read_only=True)
    title = serializers.CharField(read_only=True)
    members = UserSerializer(many=True, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    kind = serializers.ChoiceField(choices=ChatKind.choices, read_only=True)
    owner_id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="null: only staff manage this chat."
    )
    seq = serializers.IntegerField(read_only=True, help_text="The chat's latest change.")


class ChatSerializer(ChatInfoSerializer):
    last_message = MessageSerializer(
        read_only=True, allow_null=True, help_text="The newest message that is not deleted."
    )
    unread_count = serializers.IntegerField(
        read_only=True,
        help_text="Messages by others after the caller's read cursor, not deleted.",
    )

    def to_representation(self, instance: Chat) -> dict[str, Any]:
        last = instance.last_message
        return {
            **events.chat_info_data(instance, instance.members.all()),
            "last_message": None if last is None else MessageSerializer(last).data,
            "unread_count": instance.unread_count,
        }


class MessagePageSerializer(serializers.Serializer):
    results = MessageSerializer(many=True)
    next = serializers.URLField(allow_null=True)
    read_cursors = ReadCursorSerializer(many=True)


# --- Input ----------------------------------------------------------------------------------------


class ChatCreateSerializer(serializers.Serializer):
    title = StrictCharField(
        max_length=TITLE_MAX_LENGTH, allow_blank=True, default="", trim_whitespace=False
    )
    member_ids = serializers.ListField(
        child=IdField(),
        default=list,
        max_length=1000,
        help_text="Other members; the caller is always a member. Repeated ids count once.",
    )


class ChatUpdateSerializer(serializers.Serializer):
    """PATCH: a field left out is left as it is."""

    title = StrictCharField(
        max_length=TITLE_MAX_LENGTH, allow_blank=True, trim_whitespace=False, required=False
    )


class MembersAddSerializer(serializers.Serializer):
    user_ids = serializers.ListField(
        child=IdField(),
        allow_empty=False,
        max_length=1000,
        help_text="Users to add; present members are ignored, repeated ids count once.",
    )


class DirectChatSerializer(serializers.Serializer):
    user_id = IdField(help_text="The other user.")


class MessageEditSerializer(serializers.Serializer):
    """PATCH: the new text, under a new message's rules (so required: an edit sets
    `edited_at`, and an edit of nothing would not)."""

    text = MessageTextField()


class EmojiField(StrictCharField):
    """1..32 characters without white space, valid UTF-8 (`👍`, `:tada:`)."""

    def to_internal_value(self, data: Any) -> str:
        emoji = super().to_internal_value(data)
        if (problem := emoji_problem(emoji)) is not None:
            raise serializers.ValidationError(problem)
        return emoji


class EmojiSerializer(serializers.Serializer):
    emoji = EmojiField(trim_whitespace=False)


class MessageCreateSerializer(serializers.Serializer):
    text = MessageTextField()
    client_id = StrictCharField(
        max_length=CLIENT_ID_MAX_LENGTH,
        required=False,
        allow_null=True,
        trim_whitespace=False,
        help_text="Makes sending idempotent: a repeat by the same user in the same chat "
        "returns the original message and creates nothing.",
    )


class HistoryQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=200, default=50)
    since_seq = PositionField(
        min_value=0,
        required=False,
        help_text="The messages changed after this seq of the chat, in their current state "
        "(a deleted one as its tombstone), by increasing seq: catching up on every change.",
    )
    after = PositionField(
        min_value=0,
        required=False,
        help_text="Messages with id > after, oldest first (catch-up after a reconnect).",
    )
    before = PositionField(
        min_value=1,
        required=False,
        help_text="Messages with id < before, newest first (what `next` uses).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if len({"after", "before", "since_seq"} & attrs.keys()) > 1:
            raise serializers.ValidationError(
                "Use one of `after`, `before` and `since_seq`, not several."
            )
        return attrs


# --- WebSocket events (client -> server) ----------------------------------------------------------


class ChatEventSerializer(serializers.Serializer):
    chat_id = IdField()


class NewMessageEventSerializer(ChatEventSerializer, MessageCreateSerializer):
    pass


class ReadMessageEventSerializer(ChatEventSerializer):
    id = IdField()


class AuthEventSerializer(serializers.Serializer):
    token = StrictCharField(max_length=4096, trim_whitespace=False)


class ReadCursorUpdateSerializer(serializers.Serializer):
    message_id = IdField()


def first_error(errors: dict[str, Any] | list[Any]) -> str:
    """One readable line out of DRF's nested error structure, for WebSocket `error` events."""
    if isinstance(errors, dict):
        field, value = next(iter(errors.items()))
        message = first_error(value)
        return message if field == "non_field_errors" else f"{field}: {message}"
    if isinstance(errors, list) and errors:
        return first_error(errors[0]) if not isinstance(errors[0], str) else str(errors[0])
    return str(errors)
