"""Staff manage chats and their members here; read cursors come with each membership.

Every change made here goes through the same bookkeeping as the API (messaging/services/
chats.py): members added start at the chat's newest message and are announced, members
removed get `chat_removed`, a new title or owner reaches every member's sockets. A member row
cannot be given to another user once saved (remove it and add the other user instead); a
direct chat's two members are fixed; staff delete a message as a tombstone, announced like any
deletion, and never edit its text.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from messaging import services
from messaging.models import Chat, ChatMember, Message


class MemberForm(forms.ModelForm):
    class Meta:
        model = ChatMember
        fields = ["user"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and "user" in self.fields:
            # Another person in an existing row would inherit its read cursor and history.
            self.fields["user"].disabled = True
            self.fields["user"].help_text = "To replace a member, remove the row and add one."


class MemberFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        kept = [
            form
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE", False)
        ]
        if len(kept) > settings.CHAT_MAX_MEMBERS:
            raise ValidationError(f"A chat has at most {settings.CHAT_MAX_MEMBERS} members.")


class ChatMemberInline(admin.TabularInline):
    model = ChatMember
    form = MemberForm
    formset = MemberFormSet
    extra = 1
    autocomplete_fields = ["user"]
    fields = ["user", "last_read_message", "joined_at"]
    readonly_fields = ["last_read_message", "joined_at"]
    verbose_name = "member (and read cursor)"
    verbose_name_plural = "members and their read cursors"

    def _fixed(self, obj: Chat | None) -> bool:
        return obj is not None and obj.is_direct

    def has_add_permission(self, request: HttpRequest, obj: Chat | None = None) -> bool:
        return not self._fixed(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Chat | None = None) -> bool:
        return not self._fixed(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Chat | None = None) -> bool:
        return not self._fixed(obj) and super().has_delete_permission(request, obj)


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "kind", "owner", "created_at", "last_activity_at"]
    list_filter = ["kind"]
    search_fields = ["title", "members__username"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["kind", "created_at", "last_message", "last_activity_at", "seq"]
    inlines = [ChatMemberInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Chat | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.is_direct:
            fields += ["title", "owner"]  # A direct chat has no title and no owner.
        return fields

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        chat = form.instance
        if chat.owner_id is not None and not chat.memberships.filter(user=chat.owner).exists():
            # An owner manages the chat from inside it: made a member, like any other.
            services.chat_members_add(actor=None, chat_id=chat.pk, user_ids=[chat.owner_id])
            self.message_user(
                request, f"{chat.owner} was made a member, as the chat's owner.", messages.INFO
            )


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """What users wrote is never edited behind their backs; staff may delete a message, which
    leaves a tombstone in the chat's history (the API's deletion)."""

    list_display = ["id", "chat", "author_id", "created_at", "deleted", "text"]
    list_filter = ["deleted", "chat"]
    search_fields = ["text"]
    list_select_related = ["chat"]
    ordering = ["-id"]
    show_full_result_count = False
    actions = ["delete_as_tombstones"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # Django's own deletion would remove the row (moving read cursors, leaving a hole in
        # the history): the action below makes tombstones instead.
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not request.user.has_perm("messaging.delete_message"):
            actions.pop("delete_as_tombstones", None)
        return actions

    @admin.action(description="Delete the selected messages (they stay as tombstones)")
    def delete_as_tombstones(self, request: HttpRequest, queryset: Any) -> None:
        deleted = 0
        for chat_id, message_id in queryset.order_by("chat_id", "id").values_list("chat_id", "id"):
            deleted += services.message_delete(actor=None, chat_id=chat_id, message_id=message_id)
        self.message_user(request, f"{deleted} message(s) deleted.", messages.SUCCESS)
