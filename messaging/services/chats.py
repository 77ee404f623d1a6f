"""Chats and their members: create, open a direct chat, rename, add, remove, leave; and the
bookkeeping every membership change gets, whoever makes it (API, admin, plain ORM).

Membership changes lock the chat row and bump the chat's `revision`; a new membership starts
at the chat's current seq and revision, with its read cursor on the chat's newest message (so
earlier history is not unread). After commit, each user whose membership changed gets a hint
on their own group (their sockets re-read their membership: messaging/delivery.py), and the
chat's members get the new ChatInfo (`chat_updated`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from accounts.models import User
from chatproject.errors import ApplicationError, Forbidden, NotFound
from messaging import events
from messaging.models import Chat, ChatKind, ChatMember, Message, direct_key

logger = logging.getLogger(__name__)

DIRECT_IS_FIXED = "A direct chat cannot be renamed, gain or lose members, or be left."


# --- Creating -------------------------------------------------------------------------------------


def chat_create(*, creator: User, title: str = "", member_ids: Iterable[int] = ()) -> Chat:
    """A group chat owned by `creator`, whose members are the creator plus `member_ids`."""
    others = set(member_ids) - {creator.pk}
    _check_users_can_join(others, field="member_ids")
    _check_room_for(0, len(others) + 1, field="member_ids")
    with transaction.atomic():
        chat = Chat.objects.create(title=title, owner=creator)
        chat.members.add(creator.pk, *sorted(others))
    return chat


def chat_direct_open(*, user: User, other_id: int) -> tuple[Chat, bool]:
    """The direct chat of `user` and `other_id`, made the first time either asks (then True).

    One per pair, by a unique key in the database: of two concurrent first calls, one creates
    it and the other finds it."""
    if other_id == user.pk:
        raise ApplicationError("A direct chat is with someone else.", field="user_id")
    _check_users_can_join({other_id}, field="user_id")
    key = direct_key(user.pk, other_id)
    if (existing := Chat.objects.filter(direct_key=key).first()) is not None:
        return existing, False
    try:
        with transaction.atomic():
            chat = Chat.objects.create(kind=ChatKind.DIRECT, direct_key=key)
            chat.members.add(*sorted((user.pk, other_id)))
    except IntegrityError:  # The other side's call committed it first.
        return Chat.objects.get(direct_key=key), False
    return chat, True


# --- Changing -------------------------------------------------------------------------------------


def chat_rename(*, actor: User, chat_id: int, title: str | None) -> None:
    """Give the chat a new title (None: keep it, the rules are checked all the same)."""
    with transaction.atomic():
        chat = _locked_group_chat(chat_id, member=actor)
        _check_owner(chat, actor)
        if title is not None and chat.title != title:
            Chat.objects.filter(pk=chat_id).update(title=title)
            _revised(chat)


def chat_members_add(*, actor: User | None, chat_id: int, user_ids: Iterable[int]) -> None:
    """Add members (present ones are ignored). The owner may; `actor=None` is staff or code."""
    wanted = set(user_ids)
    with transaction.atomic():
        chat = _locked_group_chat(chat_id, member=actor)
        if actor is not None:
            _check_owner(chat, actor)
        present = set(
            ChatMember.objects.filter(chat_id=chat_id, user_id__in=wanted).values_list(
                "user_id", flat=True
            )
        )
        new = wanted - present
        _check_users_can_join(new, field="user_ids")
        _check_room_for(ChatMember.objects.filter(chat_id=chat_id).count(), len(new))
        if new:
            chat.members.add(*sorted(new))


def chat_member_remove(*, actor: User, chat_id: int, user_id: int) -> None:
    """The owner removes anyone; a member removes themselves (that is leaving)."""
    with transaction.atomic():
        chat = _locked_group_chat(chat_id, member=actor)
        if user_id != actor.pk:
            _check_owner(chat, actor)
        removed, _ = ChatMember.objects.filter(chat_id=chat_id, user_id=user_id).delete()
        if not removed:
            raise NotFound("This user is not a member of this chat.")


def chat_leave(*, user: User, chat_id: int) -> None:
    """Leave a chat; an owner who leaves hands it to the member who joined earliest."""
    chat_member_remove(actor=user, chat_id=chat_id, user_id=user.pk)


def _locked_group_chat(chat_id: int, *, member: User | None) -> Chat:
    chats = Chat.objects.select_for_update(of=("self",)).filter(pk=chat_id)
    if member is not None:
        chats = chats.filter(memberships__user=member)
    chat = chats.first()
    if chat is None:
        raise NotFound()
    if chat.is_direct:
        raise ApplicationError(DIRECT_IS_FIXED)
    return chat


def _check_owner(chat: Chat, actor: User) -> None:
    if chat.owner_id != actor.pk:
        raise Forbidden("Only the chat's owner may do this.")


def _check_users_can_join(user_ids: Collection[int], *, field: str) -> None:
    found = set(User.objects.filter(pk__in=user_ids, is_active=True).values_list("pk", flat=True))
    unknown = sorted(set(user_ids) - found)
    if unknown:
        raise ApplicationError(
            f"Unknown or inactive user ids: {', '.join(map(str, unknown))}.", field=field
        )


def _check_room_for(present: int, joining: int, *, field: str = "user_ids") -> None:
    limit = settings.CHAT_MAX_MEMBERS
    if present + joining > limit:
        raise ApplicationError(f"A chat has at most {limit} members.", field=field)


def members_limit_check(*, chat_id: int, joining: int) -> None:
    """For membership rows made outside the services (admin, ORM): the same bound."""
    if joining:
        _check_room_for(ChatMember.objects.filter(chat_id=chat_id).count(), joining)


# --- Bookkeeping of every membership change (called from models.py and signals.py) -----------


def memberships_begun(*, chat_id: int, user_ids: Collection[int]) -> None:
    """New membership rows (already inserted, in this transaction): they start at the chat's
    current seq and the revision their arrival makes, their cursor on the newest message."""
    chat = _locked(chat_id)
    newest = Message.objects.filter(chat_id=chat_id).aggregate(newest=Max("id"))["newest"]
    revision = _revised(chat)
    ChatMember.objects.filter(chat_id=chat_id, user_id__in=user_ids).update(
        joined_seq=chat.seq,
        joined_revision=revision,
        joined_message_id=newest,
        last_read_message_id=newest,
    )
    events.membership_changed(chat_id=chat_id, user_ids=sorted(user_ids))


def memberships_ended(*, chat_id: int, user_ids: Collection[int]) -> None:
    """Membership rows deleted (in this transaction): a new revision; an owner who left hands
    the chat to the member who joined earliest among the rest (none left: no owner)."""
    chat = _locked(chat_id)
    if chat is not None:  # Else the chat itself is being deleted.
        if chat.owner_id in user_ids:
            _hand_over(chat, leaving=user_ids)
        _revised(chat)
    events.membership_changed(chat_id=chat_id, user_ids=sorted(user_ids))


def chat_details_saved(*, chat: Chat, fields: Collection[str]) -> None:
    """`Chat.save()` of an existing chat (the admin, code): only its title and owner are
    written (its counters move under the services' locks alone), and a change is announced."""
    with transaction.atomic():
        current = _locked(chat.pk)
        if current is None:
            return
        changed = {name for name in fields if getattr(current, name) != getattr(chat, name)}
        if not changed:
            return
        Chat.objects.filter(pk=chat.pk).update(**{name: getattr(chat, name) for name in changed})
        _revised(current)


def owned_chats_hand_over(*, chat_ids: Iterable[int], leaving: int) -> None:
    """After a user's deletion (which left these chats without an owner): each goes to its
    member who joined earliest."""
    for chat_id in sorted(chat_ids):
        with transaction.atomic():
            chat = _locked(chat_id)
            if chat is not None and chat.owner_id is None and not chat.is_direct:
                _hand_over(chat, leaving={leaving})
                _revised(chat)


def _hand_over(chat: Chat, *, leaving: Collection[int]) -> None:
    # Who joined earliest: the smallest joined_revision (those who joined together, as a new
    # chat's members do, by user id).
    heir = (
        ChatMember.objects.filter(chat_id=chat.pk)
        .exclude(user_id__in=leaving)
        .order_by("joined_revision", "user_id")
        .values_list("user_id", flat=True)
        .first()
    )
    chat.owner_id = heir
    Chat.objects.filter(pk=chat.pk).update(owner_id=heir)


def _locked(chat_id: int) -> Chat | None:
    return Chat.objects.select_for_update().filter(pk=chat_id).first()


def _revised(chat: Chat) -> int:
    """The chat's next revision, announced (its ChatInfo) to its members after commit."""
    chat.revision += 1
    Chat.objects.filter(pk=chat.pk).update(revision=chat.revision)
    chat_id = chat.pk
    transaction.on_commit(lambda: _publish_chat_info(chat_id))
    return chat.revision


# --- ChatInfo -------------------------------------------------------------------------------------


def chat_info_load(chat_id: int) -> tuple[int, dict[str, Any]] | None:
    """(revision, ChatInfo) of the chat as committed now; None when it does not exist."""
    chat = Chat.objects.filter(pk=chat_id).first()
    if chat is None:
        return None
    members = list(
        User.objects.filter(memberships__chat_id=chat_id).order_by("id").only("id", "username")
    )
    return chat.revision, events.chat_info_data(chat, members)


# (chat id, creation time, revision) of the ChatInfo frames this process published lately: a
# transaction that changes a chat several times (a chat deleted with its members, many members
# added one by one in the admin) registers one publish per change, and all but the first find
# it done. (The creation time tells apart a chat whose id SQLite reused.)
_published_info: OrderedDict[tuple[int, str, int], None] = OrderedDict()
_published_info_lock = threading.Lock()  # Commits happen on many threads.
_PUBLISHED_INFO_KEPT = 1024


def _publish_chat_info(chat_id: int) -> None:
    """After commit: the chat's ChatInfo as it is now, to its members' sockets."""
    try:
        loaded = chat_info_load(chat_id)
    except Exception:  # The database went away after the commit: sockets resync later.
        logger.warning("could not load chat %s to announce it", chat_id, exc_info=True)
        return
    if loaded is None:
        return  # Deleted in the same transaction: its members get chat_removed instead.
    revision, info = loaded
    key = (chat_id, info["created_at"], revision)
    with _published_info_lock:
        if key in _published_info:
            return
        _published_info[key] = None
        while len(_published_info) > _PUBLISHED_INFO_KEPT:
            _published_info.popitem(last=False)
    events.publish_chat_info(
        chat_id=chat_id, revision=revision, frame=events.chat_updated_frame(info)
    )
