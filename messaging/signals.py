"""Tell open sockets about membership changes, however they were made.

The admin saves ChatMember rows one by one (post_save/post_delete); `chat.members.add()`
bulk-creates them (m2m_changed only); `remove()`, `clear()` and deletes of chats or users
delete rows through a collector, which sends post_delete for each.
"""

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Subquery
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from messaging import events
from messaging.models import Chat, ChatMember, Message


def _announce_joins(chat_id: int, user_ids: Iterable[int]) -> None:
    # Read inside the membership's transaction: any message not visible yet has a larger id
    # (messages of a chat commit in id order), so the new member's sockets miss none.
    since_id = Chat.objects.filter(pk=chat_id).values_list("last_message_id", flat=True).first()
    for user_id in user_ids:
        events.on_commit_member_joined(user_id=user_id, chat_id=chat_id, since_id=since_id)


@receiver(post_save, sender=ChatMember)
def announce_join(sender: type, instance: ChatMember, created: bool, **kwargs: Any) -> None:
    if created:
        _announce_joins(instance.chat_id, [instance.user_id])


@receiver(post_delete, sender=ChatMember)
def announce_leave(sender: type, instance: ChatMember, **kwargs: Any) -> None:
    events.on_commit_member_left(user_id=instance.user_id, chat_id=instance.chat_id)


@receiver(m2m_changed, sender=Chat.members.through)
def announce_bulk_join(
    sender: type, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    if action != "post_add" or not pk_set:
        return
    # Forward: instance is a Chat and pk_set holds user ids; reverse: the other way round.
    if reverse:
        for chat_id in pk_set:
            _announce_joins(chat_id, [instance.pk])
    else:
        _announce_joins(instance.pk, pk_set)


@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def repoint_last_messages(sender: type, instance: Any, **kwargs: Any) -> None:
    """A deleted user's messages go with them; chats whose newest message was theirs would
    point at nothing. Point them at the newest message left.

    This listens to user deletions rather than to each message's, so that deleting a chat or a
    user with many messages stays one bulk DELETE instead of a signal per row.
    """
    newest = Message.objects.filter(chat_id=OuterRef("pk")).order_by("-id").values("id")[:1]
    Chat.objects.filter(last_message__isnull=True).filter(
        Exists(Message.objects.filter(chat_id=OuterRef("pk")))
    ).update(last_message=Subquery(newest))
