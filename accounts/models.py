from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import connection, models, transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Collate, Upper


def username_key() -> Upper | Collate:
    """The key people are found and listed by: the username in upper case (the search is
    case-insensitive), compared byte by byte on PostgreSQL ("C" collation), so that one index
    (accounts migration 0003) serves both the prefix filter and the order."""
    key = Upper("username")
    return Collate(key, "C") if connection.vendor == "postgresql" else key


class PeopleManager(UserManager):
    def search(self, prefix: str) -> QuerySet[User]:
        """Active users whose username starts with `prefix`, in any case, by username."""
        return (
            self.filter(is_active=True)
            .annotate(username_key=username_key())
            .filter(username_key__startswith=prefix.upper())
            .order_by("username_key", "id")
        )


class User(AbstractUser):
    """The service's user. A model of our own from the first migration, so it can grow."""

    objects = PeopleManager()

    # Every token carries the version it was issued under (claim "tv"); a token whose version
    # is not the user's current one is refused (accounts/auth.py). A password change or a
    # deactivation adds one, which ends every session issued before: JWT's `iat` counts whole
    # seconds, a counter is exact. Only `revoke_sessions()` writes it (see `save()`).
    token_version = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Raised by a password change or a deactivation; older tokens are refused.",
    )

    def revoke_sessions(self) -> int:
        """End every session issued so far: the token version goes up by one (atomically, so
        concurrent revocations are all counted), and after commit every socket of the user,
        on every instance, is told to close. Returns the new version. Call it inside the
        transaction that makes the change (password, deactivation)."""
        # Imported here: messaging's models import this module.
        from messaging.events import on_commit_sessions_revoked

        manager = type(self)._default_manager
        manager.filter(pk=self.pk).update(token_version=F("token_version") + 1)
        self.token_version = manager.filter(pk=self.pk).values_list("token_version", flat=True)[0]
        on_commit_sessions_revoked(user_id=self.pk, token_version=self.token_version)
        return self.token_version

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Two things on top of Django's save():

        - It never writes `token_version` of an existing user: an instance loaded before a
          password change (a `request.user`, a form) would otherwise write the old version back
          and bring the revoked tokens back to life.
        - Deactivating a user (the admin, `user.is_active = False; user.save()`) ends their
          sessions, in the same transaction (`revoke_sessions`). A queryset's
          `update(is_active=False)` bypasses this: HTTP still refuses those users' tokens
          (`is_active` is checked on every request), but their open sockets are not told.
        """
        if self._state.adding:
            super().save(*args, **kwargs)
            return
        update_fields = kwargs.get("update_fields")
        if update_fields is None:
            deferred = self.get_deferred_fields()
            update_fields = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.attname not in deferred
            ]
        kwargs["update_fields"] = [name for name in update_fields if name != "token_version"]
        if self.is_active or "is_active" not in kwargs["update_fields"]:
            super().save(*args, **kwargs)
            return
        with transaction.atomic(using=kwargs.get("using")):
            # Locks the row; 0 rows: already inactive, nothing to revoke again.
            manager = type(self)._default_manager
            deactivating = (
                manager.select_for_update()
                .filter(pk=self.pk, is_active=True)
                .values_list("pk", flat=True)
                .first()
                is not None
            )
            super().save(*args, **kwargs)
            if deactivating:
                self.revoke_sessions()
