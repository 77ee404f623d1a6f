"""A deleted user's sockets are told to close, as a deactivated user's are (`User.save`).

`post_delete` runs for every user deleted, one by one or by a queryset (the admin's bulk
delete), unlike `delete()`; a deleted user's tokens fail over HTTP at once (no such user).
"""

from typing import Any

from django.db.models.signals import post_delete
from django.dispatch import receiver

from accounts.models import User
from messaging.events import on_commit_sessions_revoked


@receiver(post_delete, sender=User, dispatch_uid="accounts.user_deleted")
def user_deleted(sender: type[User], instance: User, **kwargs: Any) -> None:
    # A version above every token's: each open socket of the user has an older one.
    on_commit_sessions_revoked(user_id=instance.pk, token_version=instance.token_version + 1)
