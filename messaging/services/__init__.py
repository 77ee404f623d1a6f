"""Every write of the messaging app: atomic, with its events sent only after commit.

Both the REST views and the WebSocket consumer call these; neither writes on its own.
`chats` holds chats and membership (and the bookkeeping every membership change gets, however
it is made); `messages` holds changes to messages and read cursors.
"""

from messaging.services.chats import (
    chat_create,
    chat_direct_open,
    chat_info_load,
    chat_leave,
    chat_member_remove,
    chat_members_add,
    chat_rename,
)
from messaging.services.messages import (
    ChangedMessage,
    SentMessage,
    message_delete,
    message_edit,
    message_send,
    message_send_many,
    reaction_add,
    reaction_remove,
    read_cursor_advance,
)

__all__ = [
    "ChangedMessage",
    "SentMessage",
    "chat_create",
    "chat_direct_open",
    "chat_info_load",
    "chat_leave",
    "chat_member_remove",
    "chat_members_add",
    "chat_rename",
    "message_delete",
    "message_edit",
    "message_send",
    "message_send_many",
    "reaction_add",
    "reaction_remove",
    "read_cursor_advance",
]
