"""REST endpoints for chats, their members and their messages: validate, call one service,
serialize.

Every endpoint under `/chats/{id}` first checks that the caller is a member: a chat that does
not exist and a chat of others answer the same 404, whatever else the request holds. Then the
body is validated (400), then the service applies the rules (400, 403, 404).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.throttling import BaseThrottle
from rest_framework.utils.urls import remove_query_param, replace_query_param

from chatproject.errors import NotFound
from chatproject.pagination import StrictCursorPagination
from chatproject.query import single_values
from chatproject.throttling import ScopedRateThrottle
from messaging import events, history, services
from messaging.history import ChatPosition
from messaging.models import Chat, ChatMember
from messaging.reactions import Reactions
from messaging.serializers import (
    MAX_ID,
    ChatCreateSerializer,
    ChatSerializer,
    ChatUpdateSerializer,
    DirectChatSerializer,
    EmojiSerializer,
    HistoryQuerySerializer,
    MembersAddSerializer,
    MessageCreateSerializer,
    MessageEditSerializer,
    MessagePageSerializer,
    MessageSerializer,
    ReadCursorSerializer,
    ReadCursorUpdateSerializer,
)

# One validating instance: building a serializer per request deep-copies its fields.
# `run_validation` keeps no state on the instance, so threads can share it (docs/internals.md).
_history_query = HistoryQuerySerializer()

# Per-user throttle scope of each action (DEFAULT_THROTTLE_RATES in settings); actions not
# named here are reads, which are not throttled.
THROTTLE_SCOPES = {
    "create": "chat_create",
    "direct": "chat_create",
    "partial_update": "chat_change",
    "members": "chat_change",
    "member": "chat_change",
    "leave": "chat_change",
    "send_message": "send",
    "message": "send",
    "delete_message": "send",
    "reaction": "send",
}

NOT_FOUND_RESPONSES = {404: OpenApiTypes.OBJECT}
# A direct chat cannot be renamed, gain or lose members, or be left: 400 with a detail.
DIRECT_CHAT_RESPONSES = {400: OpenApiTypes.OBJECT}
# `emoji` in the path: what EmojiField accepts, for clients and fuzzers.
EMOJI_PARAMETER = OpenApiParameter(
    "emoji",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 32,
        "pattern": r"^[^\s\u0000-\u001f\u007f-\u009f]+$",
    },
    OpenApiParameter.PATH,
    description="1..32 characters, no white space (`👍`, `:tada:`), percent-encoded.",
)


class ChatListPagination(StrictCursorPagination):
    """Most recent activity first; a cursor, so a page costs the same at any depth."""

    ordering = ("-last_activity_at", "-id")


def _validated(serializer_class: type[Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ChatViewSet(viewsets.GenericViewSet):
    serializer_class = ChatSerializer
    pagination_class = ChatListPagination
    lookup_value_regex = r"[0-9]+"

    def get_throttles(self) -> list[BaseThrottle]:
        scope = THROTTLE_SCOPES.get(self.action)
        if scope is None:
            return []
        self.throttle_scope = scope
        return [ScopedRateThrottle()]

    def get_queryset(self):  # type: ignore[override]
        return Chat.objects.for_listing(self.request.user)

    # --- Chats ---------------------------------------------------------------------------------

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ChatSerializer(page, many=True).data)

    @extend_schema(responses={200: ChatSerializer, **NOT_FOUND_RESPONSES})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self._chat_data())

    @extend_schema(request=ChatCreateSerializer, responses={201: ChatSerializer})
    def create(self, request: Request) -> Response:
        data = _validated(ChatCreateSerializer, request.data)
        chat = services.chat_create(creator=request.user, **data)
        return Response(self._chat_data(chat.pk), status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ChatUpdateSerializer,
        responses={200: ChatSerializer, 403: OpenApiTypes.OBJECT, **NOT_FOUND_RESPONSES},
        description="Rename the chat: its owner only; a direct chat cannot be renamed (400).",
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        chat_id = self._membership().chat_id
        data = _validated(ChatUpdateSerializer, request.data)
        services.chat_rename(actor=request.user, chat_id=chat_id, title=data.get("title"))
        return Response(self._chat_data(chat_id))

    @extend_schema(
        request=DirectChatSerializer,
        responses={201: ChatSerializer, 200: ChatSerializer},
        description=(
            "The direct chat of the caller and `user_id`: 201 when this call made it, 200 with "
            "the same chat after that, whichever of the two asks. Yourself or an unknown or "
            "inactive user: 400."
        ),
    )
    @action(detail=False, methods=["post"])
    def direct(self, request: Request) -> Response:
        data = _validated(DirectChatSerializer, request.data)
        chat, created = services.chat_direct_open(user=request.user, other_id=data["user_id"])
        return Response(
            self._chat_data(chat.pk),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    # --- Members -------------------------------------------------------------------------------

    @extend_schema(
        request=MembersAddSerializer,
        responses={200: ChatSerializer, 403: OpenApiTypes.OBJECT, **NOT_FOUND_RESPONSES},
        description=(
            "Add members: the owner only. Present members are ignored; an unknown or inactive "
            "id, or more than CHAT_MAX_MEMBERS members in all: 400, and nothing changes."
        ),
    )
    @action(detail=True, methods=["post"])
    def members(self, request: Request, pk: str) -> Response:
        chat_id = self._membership().chat_id
        data = _validated(MembersAddSerializer, request.data)
        services.chat_members_add(actor=request.user, chat_id=chat_id, user_ids=data["user_ids"])
        return Response(self._chat_data(chat_id))

    @extend_schema(
        request=None,
        responses={
            204: None,
            403: OpenApiTypes.OBJECT,
            **NOT_FOUND_RESPONSES,
            **DIRECT_CHAT_RESPONSES,
        },
        description=(
            "Remove a member: the owner removes anyone, any member removes themselves "
            "(leaving); otherwise 403. A user who is not a member: 404."
        ),
    )
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<user_id>[0-9]+)")
    def member(self, request: Request, pk: str, user_id: str) -> Response:
        chat_id = self._membership().chat_id
        services.chat_member_remove(
            actor=request.user, chat_id=chat_id, user_id=_bounded_id(user_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None,
        responses={204: None, **NOT_FOUND_RESPONSES, **DIRECT_CHAT_RESPONSES},
        description=(
            "Leave the chat. An owner who leaves hands it to the member who joined earliest "
            "among the rest (none left: no owner). A direct chat cannot be left (400)."
        ),
    )
    @action(detail=True, methods=["post"])
    def leave(self, request: Request, pk: str) -> Response:
        services.chat_leave(user=request.user, chat_id=self._membership().chat_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- Messages ------------------------------------------------------------------------------

    @extend_schema(
        parameters=[HistoryQuerySerializer],
        responses={200: MessagePageSerializer, **NOT_FOUND_RESPONSES},
        description=(
            "Newest first, walking to older messages through `next`; with `after=ID`, the "
            "messages with id > ID oldest first; with `since_seq=S`, the messages changed "
            "after S in their current state, by increasing seq. `next` is null once caught "
            "up. `read_cursors` holds one cursor per member."
        ),
    )
    @action(detail=True, methods=["get"], url_path="messages")
    def messages(self, request: Request, pk: str) -> Response:
        params = _history_query.run_validation(single_values(request, _history_query.fields))
        chat_id = self._chat_id()
        # One query answers both "is the caller a member?" and "where is everyone's cursor?".
        cursors, position = history.member_cursors(chat_id)
        if request.user.pk not in {user_id for user_id, _ in cursors}:
            raise NotFound()
        page, next_url = self._history_page(request, chat_id, position=position, **params)
        return Response(
            {
                "results": [events.message_data(row, reactions) for row, reactions in page],
                "next": next_url,
                "read_cursors": [
                    {"user_id": user_id, "message_id": message_id}
                    for user_id, message_id in cursors
                ],
            }
        )

    @messages.mapping.post
    @extend_schema(
        request=MessageCreateSerializer,
        responses={201: MessageSerializer, 200: MessageSerializer, **NOT_FOUND_RESPONSES},
        description=(
            "Send a message over HTTP (the WebSocket `new_message` does the same). 201 when "
            "created; 200 with the original message when `client_id` repeats an earlier send."
        ),
    )
    def send_message(self, request: Request, pk: str) -> Response:
        data = _validated(MessageCreateSerializer, request.data)
        sent = services.message_send(author=request.user, chat_id=self._chat_id(), **data)
        return Response(
            events.message_data(sent.message, sent.reactions),
            status=status.HTTP_201_CREATED if sent.created else status.HTTP_200_OK,
        )

    @extend_schema(
        request=MessageEditSerializer,
        responses={200: MessageSerializer, 403: OpenApiTypes.OBJECT, **NOT_FOUND_RESPONSES},
        description="Edit: its author only (403 for other members); a deleted message: 404.",
    )
    @action(detail=True, methods=["patch"], url_path=r"messages/(?P<message_id>[0-9]+)")
    def message(self, request: Request, pk: str, message_id: str) -> Response:
        chat_id = self._membership().chat_id
        data = _validated(MessageEditSerializer, request.data)
        changed = services.message_edit(
            editor=request.user,
            chat_id=chat_id,
            message_id=_bounded_id(message_id),
            text=data["text"],
        )
        return Response(events.message_data(changed.message, changed.reactions))

    @message.mapping.delete
    @extend_schema(
        request=None,
        responses={204: None, 403: OpenApiTypes.OBJECT, **NOT_FOUND_RESPONSES},
        description=(
            "Delete: its author or the chat's owner (403 for other members). It stays in the "
            "history as a tombstone (same id and created_at, `deleted`, no text, no "
            "reactions). Deleting again: 204."
        ),
    )
    def delete_message(self, request: Request, pk: str, message_id: str) -> Response:
        chat_id = self._membership().chat_id
        services.message_delete(
            actor=request.user, chat_id=chat_id, message_id=_bounded_id(message_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["PUT"],
        request=None,
        parameters=[EMOJI_PARAMETER],
        responses={204: None, 400: OpenApiTypes.OBJECT, **NOT_FOUND_RESPONSES},
        description=(
            "Add your reaction (again: 204, nothing changes). `emoji`: 1..32 characters, no "
            "white space, percent-encoded; at most 20 different emoji per message. A deleted "
            "message: 404."
        ),
    )
    @extend_schema(
        methods=["DELETE"],
        request=None,
        parameters=[EMOJI_PARAMETER],
        responses={204: None, 400: OpenApiTypes.OBJECT, **NOT_FOUND_RESPONSES},
        description="Take your reaction back (absent: 204, nothing changes).",
    )
    @action(
        detail=True,
        methods=["put", "delete"],
        # Any characters: "/" is a valid emoji, sent percent-encoded (see `_emoji`).
        url_path=r"messages/(?P<message_id>[0-9]+)/reactions/(?P<emoji>.+?)",
    )
    def reaction(self, request: Request, pk: str, message_id: str, emoji: str) -> Response:
        chat_id = self._membership().chat_id
        change = services.reaction_add if request.method == "PUT" else services.reaction_remove
        change(
            user=request.user,
            chat_id=chat_id,
            message_id=_bounded_id(message_id),
            emoji=_emoji(request, emoji),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=ReadCursorUpdateSerializer, responses={200: ReadCursorSerializer})
    @action(detail=True, methods=["post"], url_path="read")
    def read(self, request: Request, pk: str) -> Response:
        """Move the caller's read cursor forward (never back), as the WebSocket
        `read_message` does."""
        data = _validated(ReadCursorUpdateSerializer, request.data)
        services.read_cursor_advance(
            reader=request.user, chat_id=self._chat_id(), message_id=data["message_id"]
        )
        member = self._membership()
        return Response({"user_id": member.user_id, "message_id": member.last_read_message_id})

    # --- Helpers -------------------------------------------------------------------------------

    def _chat_id(self) -> int:
        return _bounded_id(self.kwargs["pk"])

    def _membership(self) -> ChatMember:
        """The caller's membership of the chat in the URL, or a 404 that reveals nothing."""
        member = ChatMember.objects.filter(chat_id=self._chat_id(), user=self.request.user).first()
        if member is None:
            raise NotFound()
        return member

    def _chat_data(self, chat_id: int | None = None) -> dict[str, Any]:
        chat_id = self._chat_id() if chat_id is None else chat_id
        chat = self.get_queryset().filter(pk=chat_id).first()
        if chat is None:
            raise NotFound()
        return ChatSerializer(chat).data

    def _history_page(
        self,
        request: Request,
        chat_id: int,
        *,
        limit: int,
        position: ChatPosition,
        after: int | None = None,
        before: int | None = None,
        since_seq: int | None = None,
    ) -> tuple[list[tuple[history.MessageRow, Reactions]], str | None]:
        """A keyset page (never OFFSET) and the URL of the next one, or None at the end."""
        page = history.message_page(
            chat_id,
            limit=limit + 1,
            position=position,
            after=after,
            before=before,
            since_seq=since_seq,
        )
        if len(page) <= limit:
            return page, None
        page = page[:limit]
        url, last = request.build_absolute_uri(), page[-1][0]
        if since_seq is not None:
            return page, replace_query_param(url, "since_seq", last.seq)
        if after is not None:
            return page, replace_query_param(url, "after", last.pk)
        return page, replace_query_param(remove_query_param(url, "after"), "before", last.pk)


def _emoji(request: Request, emoji: str) -> str:
    """The `emoji` of the path, validated. Under ASGI (daphne, uvicorn) it is read from
    `raw_path`, the path as sent: the server's decoded `path` has already turned a "%2F" into a
    "/", which the route cannot tell from the separator before an optional trailing slash
    ("a%2F" is the emoji "a/", "a/" the emoji "a"), and bytes that are not UTF-8 into U+FFFD,
    which cannot be told from a U+FFFD sent as such. Here such bytes are refused, and U+FFFD
    is a character like any other."""
    raw_path = getattr(request, "scope", {}).get("raw_path")  # ASGI requests only.
    if raw_path and (sent := _RAW_EMOJI.search(raw_path)):
        try:
            emoji = unquote_to_bytes(sent.group(1)).decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.ValidationError(
                {"emoji": ["An emoji must be valid UTF-8 once percent-decoded."]}
            ) from None
    return _validated(EmojiSerializer, {"emoji": emoji})["emoji"]


_RAW_EMOJI = re.compile(rb"/messages/[0-9]+/reactions/(.+?)/?$")


def _bounded_id(value: str) -> int:
    """An id from the path; beyond the database's bigint nothing can exist: 404, not a 500."""
    number = int(value)
    if number > MAX_ID:
        raise NotFound()
    return number
