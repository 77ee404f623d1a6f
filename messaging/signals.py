"""Membership bookkeeping for changes made outside the services, and what a user's deletion does.

The admin and plain code save ChatMember rows one by one (`ChatMember.save`, models.py);
`chat.members.add()` bulk-creates them (m2m_changed only); `remove()`, `clear()` and deletes
of chats or users delete rows through a collector, which sends post_delete for each. Each of
those paths ends in the same bookkeeping (messaging/services/chats.py). Rows made with
`ChatMember.objects.bulk_create` send no signal at all, as in Django itself: use
`chat.members.add()` instead.
"""

from typing import Any

from django.conf import settings
from django.db.models.signals import m2m_changed, post_delete, pre_delete
from django.dispatch import receiver

from messaging.models import Chat, ChatMember
from messaging.services.chats import (
    members_limit_check,
    memberships_begun,
    memberships_ended,
    owned_chats_hand_over,
)
from messaging.services.messages import messages_erase_authored_by


@receiver(m2m_changed, sender=Chat.members.through)
def members_added(
    sender: type, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    if action not in {"pre_add", "post_add"} or not pk_set:
        return
    # Forward: instance is a Chat and pk_set holds user ids; reverse: the other way round.
    pairs = (
        [(chat_id, [instance.pk]) for chat_id in sorted(pk_set)]
        if reverse
        else [(instance.pk, sorted(pk_set))]
    )
    for chat_id, user_ids in pairs:
        if action == "pre_add":
            members_limit_check(chat_id=chat_id, joining=len(user_ids))
        else:
            memberships_begun(chat_id=chat_id, user_ids=user_ids)


@receiver(post_delete, sender=ChatMember)
def member_removed(sender: type, instance: ChatMember, **kwargs: Any) -> None:
    memberships_ended(chat_id=instance.chat_id, user_ids=[instance.user_id])


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL)
def keep_history_of_deleted_user(sender: type, instance: Any, **kwargs: Any) -> None:
    """A deleted user's messages stay as tombstones under their id (no read cursor moves, the
    chat's history keeps every id) and their reactions go; each is announced as a change."""
    messages_erase_authored_by(user_id=instance.pk)
    # The deletion sets the owner of their chats to null before it deletes their memberships;
    # the chats are handed over once it is done (below).
    instance._owned_chat_ids = list(
        Chat.objects.filter(owner_id=instance.pk).values_list("pk", flat=True)
    )


@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def hand_over_chats_of_deleted_user(sender: type, instance: Any, **kwargs: Any) -> None:
    owned_chats_hand_over(chat_ids=getattr(instance, "_owned_chat_ids", []), leaving=instance.pk)
