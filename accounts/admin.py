from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.db import transaction

from accounts.models import User


class PasswordChangeEndsSessions(AdminPasswordChangeForm):
    """Staff setting a user's password (a compromised account, say) ends the user's sessions,
    as the user's own change does (deactivating in the admin does too: `User.save`)."""

    def save(self, commit: bool = True) -> Any:
        with transaction.atomic():
            user = super().save(commit=commit)
            if commit:
                user.revoke_sessions()
        return user


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    change_password_form = PasswordChangeEndsSessions
    readonly_fields = ("token_version",)
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("Sessions", {"fields": ("token_version",)}),
    )
