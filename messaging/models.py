"""Chats, their members (each membership row is that member's read cursor), messages and reactions.

The read cursor lives on the membership row itself, so a member without a cursor cannot
exist: whoever adds a member (admin, API, `chat.members.add(...)`, plain ORM) creates both.

Two counters per chat order what clients see (both only ever move under the chat's row lock):
- `Chat.seq` numbers every change to the chat's messages (sent, edited, deleted, a reaction
  added or removed): 1, 2, 3, ... A message's `seq` is that of its latest change.
- `Chat.revision` numbers every change to what the chat is (title, owner, members). Events carry
  it, and a socket that sees a revision newer than the membership it knows re-reads it before
  delivering anything (messaging/fanout.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Count, OuterRef, Prefetch, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

TITLE_MAX_LENGTH = 200
TEXT_MAX_LENGTH = 4096
CLIENT_ID_MAX_LENGTH = 64
EMOJI_MAX_LENGTH = 32


class ChatKind(models.TextChoices):
    GROUP = "group"
    DIRECT = "direct"


class ChatQuerySet(models.QuerySet["Chat"]):
    def for_user(self, user: settings.AUTH_USER_MODEL) -> ChatQuerySet:
        """The chats `user` is a member of (the membership rule: messaging/membership.py)."""
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
            Message.objects.filter(
                chat_id=OuterRef("pk"), id__gt=OuterRef("read_up_to"), deleted=False
            )
            .exclude(author_id=user.pk)
            .order_by()
            .values("chat_id")
            .annotate(n=Count("id"))
            .values("n")
        )
        return (
            self.for_user(user)
            .select_related("last_message")
            .prefetch_related(
                Prefetch("members", queryset=User.objects.only("id", "username").order_by("id")),
                Prefetch("last_message__reactions", queryset=Reaction.objects.order_by("id")),
            )
            .annotate(read_up_to=Coalesce(Subquery(cursor), Value(0), output_field=BigInt()))
            .annotate(unread_count=Coalesce(Subquery(unread), Value(0), output_field=BigInt()))
            .order_by("-last_activity_at", "-id")
        )


class Chat(models.Model):
    title = models.CharField(max_length=TITLE_MAX_LENGTH, blank=True, default="")
    kind = models.CharField(
        max_length=6, choices=ChatKind.choices, default=ChatKind.GROUP, editable=False
    )
    # Null: nobody but staff manages the chat (direct chats, and admin-made chats without one).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_chats",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="ChatMember", related_name="chats"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # The newest message that is not deleted. Denormalised under the chat's row lock, so the
    # chat list is one indexed scan instead of a per-chat lookup of its newest message.
    last_message = models.ForeignKey(
        "Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    # Never goes back: the newest message's time, or the creation when it has none.
    last_activity_at = models.DateTimeField(default=timezone.now, editable=False)
    seq = models.BigIntegerField(default=0, editable=False)
    revision = models.BigIntegerField(default=0, editable=False)
    # "<smaller user id>:<larger user id>" for a direct chat: one direct chat per pair of users.
    direct_key = models.CharField(max_length=41, null=True, blank=True, editable=False)  # noqa: DJ001

    objects = ChatQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["-last_activity_at", "-id"], name="chat_activity_idx")]
        constraints = [
            models.UniqueConstraint(fields=["direct_key"], name="one_direct_chat_per_pair"),
            models.CheckConstraint(
                condition=(
                    Q(kind=ChatKind.DIRECT, direct_key__isnull=False, owner__isnull=True)
                    | Q(kind=ChatKind.GROUP, direct_key__isnull=True)
                ),
                name="direct_chats_have_a_pair_and_no_owner",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Chat {self.pk}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A new chat is inserted as it is. An existing one writes only its title and owner
        (its counters move under the services' row locks alone, never from a stale copy), and
        a change is announced to its members (messaging/services/chats.py)."""
        if self._state.adding:
            super().save(*args, **kwargs)
            return
        from messaging.services.chats import chat_details_saved

        requested = kwargs.get("update_fields")
        editable = {"title", "owner_id"}
        if requested is not None:
            editable &= {"owner_id" if name == "owner" else name for name in requested}
        chat_details_saved(chat=self, fields=editable)

    @property
    def is_direct(self) -> bool:
        return self.kind == ChatKind.DIRECT


def direct_key(user_id: int, other_id: int) -> str:
    low, high = sorted((user_id, other_id))
    return f"{low}:{high}"


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
    # Where this membership began: the chat's seq and revision when the row was made. A row
    # is never re-created under the same revision, so (user, joined_revision) names one
    # continuous membership: sockets compare it to tell "still a member" from "left and
    # came back" (messaging/delivery.py).
    joined_seq = models.BigIntegerField(default=0, editable=False)
    joined_revision = models.BigIntegerField(default=0, editable=False)
    # The chat's newest message id then: a socket shows newer ids as new messages.
    joined_message_id = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chat", "user"], name="one_membership_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.chat}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A new membership gets its start (seq, revision, read cursor) and is announced,
        however it is made; the same row given to another user is a leave and a join."""
        from messaging.services.chats import members_limit_check, memberships_begun

        if self._state.adding:
            with transaction.atomic():
                members_limit_check(chat_id=self.chat_id, joining=1)
                super().save(*args, **kwargs)
                memberships_begun(chat_id=self.chat_id, user_ids=[self.user_id])
            self.refresh_from_db(fields=["joined_seq", "joined_revision", "last_read_message"])
            return
        with transaction.atomic():
            before = (
                ChatMember.objects.select_for_update()
                .filter(pk=self.pk)
                .values_list("user_id", flat=True)
                .first()
            )
            if before is None:
                return  # Deleted meanwhile: nothing to save.
            if before == self.user_id:
                super().save(update_fields=["last_read_message"])
                return
            # Another person in this row: the first leaves; the newcomer joins, fresh.
            ChatMember.objects.filter(pk=self.pk).delete()
            self.pk = None
            self._state.adding = True
            self.last_read_message = None
            self.save()


class Message(models.Model):
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    # No database constraint: a deleted user's messages stay as tombstones under their old id
    # (accounts deletion, messaging/signals.py), so read cursors and ids never move.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="messages",
    )
    text = models.TextField(max_length=TEXT_MAX_LENGTH, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # NULL, not "": "no client id" must not collide in the unique constraint below.
    client_id = models.CharField(  # noqa: DJ001
        max_length=CLIENT_ID_MAX_LENGTH, null=True, blank=True
    )
    seq = models.BigIntegerField(editable=False)
    edited_at = models.DateTimeField(null=True, blank=True, editable=False)
    deleted = models.BooleanField(default=False, editable=False)

    class Meta:
        constraints = [
            # Also the index behind history pages and unread counts: (chat, id) ranges.
            models.UniqueConstraint(fields=["chat", "id"], name="message_chat_id_key"),
            # And behind `since_seq` pages: (chat, seq) ranges.
            models.UniqueConstraint(fields=["chat", "seq"], name="message_chat_seq_key"),
            models.UniqueConstraint(
                fields=["author", "chat", "client_id"],
                condition=Q(client_id__isnull=False),
                name="one_message_per_client_id",
            ),
            # A message has text; a tombstone has none.
            models.CheckConstraint(
                condition=Q(deleted=False) & ~Q(text="") | Q(deleted=True, text=""),
                name="message_text_unless_deleted",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} in chat {self.chat_id}"


class Reaction(models.Model):
    """One user's emoji on one message."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reactions"
    )
    emoji = models.CharField(max_length=EMOJI_MAX_LENGTH)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["message", "emoji", "user"], name="one_reaction_per_user_and_emoji"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.emoji} by {self.user_id} on #{self.message_id}"
