"""REST endpoints for chats and their messages: validate, call one service, serialize."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle
from rest_framework.utils.urls import remove_query_param, replace_query_param

from chatproject.errors import NotFound
from messaging import events, history, services
from messaging.models import Chat, ChatMember
from messaging.serializers import (
    MAX_ID,
    ChatCreateSerializer,
    ChatSerializer,
    HistoryQuerySerializer,
    MessageCreateSerializer,
    MessagePageSerializer,
    MessageSerializer,
    PageLimitSerializer,
    ReadCursorSerializer,
    ReadCursorUpdateSerializer,
)

# One validating instance: building a serializer per request deep-copies its fields.
# `run_validation` keeps no state on the instance, so threads can share it.
_history_query = HistoryQuerySerializer()


class ChatListPagination(CursorPagination):
    """Most recent activity first; a cursor, so a page costs the same at any depth.

    A bad `limit` or `cursor` is a 400, as on the history endpoint: DRF would silently use
    the default page size, and answer 404 for a garbled cursor."""

    ordering = ("-last_activity_at", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int:
        # A plain dict, not the QueryDict: DRF reads "limit=" from a QueryDict as "absent".
        query = PageLimitSerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        return query.validated_data["limit"]

    def decode_cursor(self, request: Request) -> Cursor | None:
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError({"cursor": [self.invalid_cursor_message]}) from exc

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size, default=50)
        return parameters


class ChatViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ChatSerializer
    pagination_class = ChatListPagination
    lookup_value_regex = r"[0-9]+"

    # Only sending over HTTP is throttled (per user): the WebSocket has its own token bucket,
    # and without this the HTTP path would be a way around it.
    throttle_scope = "send"

    def get_throttles(self) -> list[BaseThrottle]:
        return [ScopedRateThrottle()] if self.action == "send_message" else []

    def get_queryset(self):  # type: ignore[override]
        return Chat.objects.for_listing(self.request.user)

    def get_object(self) -> Chat:
        chat_id = self._chat_id()
        chat = self.get_queryset().filter(pk=chat_id).first()
        if chat is None:
            raise NotFound()
        return chat

    def _chat_id(self) -> int:
        chat_id = int(self.kwargs["pk"])
        if chat_id > MAX_ID:
            raise NotFound()
        return chat_id

    def _membership(self) -> ChatMember:
        """The caller's membership of the chat in the URL, or a 404 that reveals nothing."""
        member = ChatMember.objects.filter(chat_id=self._chat_id(), user=self.request.user).first()
        if member is None:
            raise NotFound()
        return member

    @extend_schema(request=ChatCreateSerializer, responses={201: ChatSerializer})
    def create(self, request: Request) -> Response:
        serializer = ChatCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        chat = services.chat_create(creator=request.user, **serializer.validated_data)
        chat = self.get_queryset().get(pk=chat.pk)
        return Response(ChatSerializer(chat).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[HistoryQuerySerializer],
        responses={200: MessagePageSerializer},
        description=(
            "Newest first, walking to older messages through `next`; with `after=ID`, the "
            "messages with id > ID oldest first, `next` null once caught up. `read_cursors` "
            "holds one cursor per member."
        ),
    )
    @action(detail=True, methods=["get"], url_path="messages")
    def messages(self, request: Request, pk: str) -> Response:
        # A plain dict: from a QueryDict, DRF would read "limit=" or "after=" as absent.
        params = _history_query.run_validation(request.query_params.dict())
        chat_id = self._chat_id()
        # One query answers both "is the caller a member?" and "where is everyone's cursor?".
        cursors, newest_id = history.member_cursors(chat_id)
        if request.user.pk not in {user_id for user_id, _ in cursors}:
            raise NotFound()
        if newest_id is None:
            newest_id = MAX_ID  # No message yet (or none through the services): no bound.
        elif "after" not in params and "before" not in params:
            # Bounded by the chat's newest id, the first page starts where the chat's messages
            # end instead of walking the primary key backwards past other chats' newer ones
            # (9.4 ms -> 0.17 ms on the benchmark's 1,000,000-message chat).
            params["before"] = newest_id + 1
        page, next_url = self._history_page(request, chat_id, newest_id=newest_id, **params)
        return Response(
            {
                # What MessageSerializer(page, many=True).data gives, without a serializer.
                "results": [events.message_data(row) for row in page],
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
        responses={201: MessageSerializer, 200: MessageSerializer},
        description=(
            "Send a message over HTTP (the WebSocket `new_message` does the same). 201 when "
            "created; 200 with the original message when `client_id` repeats an earlier send."
        ),
    )
    def send_message(self, request: Request, pk: str) -> Response:
        serializer = MessageCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sent = services.message_send(
            author=request.user, chat_id=self._chat_id(), **serializer.validated_data
        )
        return Response(
            MessageSerializer(sent.message).data,
            status=status.HTTP_201_CREATED if sent.created else status.HTTP_200_OK,
        )

    @extend_schema(request=ReadCursorUpdateSerializer, responses={200: ReadCursorSerializer})
    @action(detail=True, methods=["post"], url_path="read")
    def read(self, request: Request, pk: str) -> Response:
        """Move the caller's read cursor forward (never back), as the WebSocket
        `read_message` does."""
        serializer = ReadCursorUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.read_cursor_advance(
            reader=request.user,
            chat_id=self._chat_id(),
            message_id=serializer.validated_data["message_id"],
        )
        member = self._membership()
        return Response({"user_id": member.user_id, "message_id": member.last_read_message_id})

    def _history_page(
        self,
        request: Request,
        chat_id: int,
        *,
        limit: int,
        newest_id: int,
        after: int | None = None,
        before: int | None = None,
    ) -> tuple[list[history.MessageRow], str | None]:
        """A keyset page (never OFFSET) and the URL of the next one, or None at the end."""
        page = history.message_page(
            chat_id, limit=limit + 1, newest_id=newest_id, after=after, before=before
        )
        if len(page) <= limit:
            return page, None
        page = page[:limit]
        url = request.build_absolute_uri()
        if after is not None:
            return page, replace_query_param(url, "after", page[-1].pk)
        return page, replace_query_param(remove_query_param(url, "after"), "before", page[-1].pk)
