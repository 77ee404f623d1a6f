"""Chats, their members (each membership row is that member's read cursor), and messages.

The read cursor lives on the membership row itself, so a member without a cursor cannot
exist: whoever adds a member (admin, API, `chat.members.add(...)`, plain ORM) creates both.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Count, OuterRef, Prefetch, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

TITLE_MAX_LENGTH = 200
TEXT_MAX_LENGTH = 4096
CLIENT_ID_MAX_LENGTH = 64


class ChatQuerySet(models.QuerySet["Chat"]):
    def for_user(self, user: settings.AUTH_USER_MODEL) -> ChatQuerySet:
        """The chats `user` is a member of."""
        return self.filter(memberships__user=user)

    def for_listing(self, user: settings.AUTH_USER_MODEL) -> ChatQuerySet:
        """The user's chats with what the Chat object shows, in a constant number of queries:
        members (one prefetch), the last message (a join) and the user's unread count."""
        from accounts.models import User

        BigInt = models.BigIntegerField
        cursor = ChatMember.objects.filter(chat_id=OuterRef("pk"), user=user).values(
            "last_read_message_id"
        )[:1]
        unread = (
            Message.objects.filter(chat_id=OuterRef("pk"), id__gt=OuterRef("read_up_to"))
            .exclude(author=user)
            .order_by()
            .values("chat_id")
            .annotate(n=Count("id"))
            .values("n")
        )
        return (
            self.for_user(user)
            .select_related("last_message")
            .prefetch_related(
                Prefetch("members", queryset=User.objects.only("id", "username").order_by("id"))
            )
            .annotate(read_up_to=Coalesce(Subquery(cursor), Value(0), output_field=BigInt()))
            .annotate(unread_count=Coalesce(Subquery(unread), Value(0), output_field=BigInt()))
            .order_by("-last_activity_at", "-id")
        )


class Chat(models.Model):
    title = models.CharField(max_length=TITLE_MAX_LENGTH, blank=True, default="")
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="ChatMember", related_name="chats"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Denormalised under the chat's row lock by `message_send`, so the chat list is one
    # indexed scan instead of a per-chat lookup of its newest message.
    last_message = models.ForeignKey(
        "Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    last_activity_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ChatQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["-last_activity_at", "-id"], name="chat_activity_idx")]

    def __str__(self) -> str:
        return self.title or f"Chat {self.pk}"


class ChatMember(models.Model):
    """A user's membership of a chat, which is also their read cursor in it."""

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    # Null: nothing read yet. On PostgreSQL a composite foreign key (see migration 0002)
    # also guarantees that the message belongs to this very chat.
    last_read_message = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    joined_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chat", "user"], name="one_membership_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.chat}"


class Message(models.Model):
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages"
    )
    text = models.TextField(max_length=TEXT_MAX_LENGTH)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # NULL, not "": "no client id" must not collide in the unique constraint below.
    client_id = models.CharField(  # noqa: DJ001
        max_length=CLIENT_ID_MAX_LENGTH, null=True, blank=True
    )

    class Meta:
        constraints = [
            # Also the index behind history pages and unread counts: (chat, id) ranges.
            models.UniqueConstraint(fields=["chat", "id"], name="message_chat_id_key"),
            models.UniqueConstraint(
                fields=["author", "chat", "client_id"],
                condition=Q(client_id__isnull=False),
                name="one_message_per_client_id",
            ),
            models.CheckConstraint(condition=~Q(text=""), name="message_text_not_empty"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} in chat {self.chat_id}"
