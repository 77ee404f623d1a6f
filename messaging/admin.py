"""Staff manage chats and their members here; read cursors come with each membership."""

from django.contrib import admin
from django.http import HttpRequest

from messaging.models import Chat, ChatMember, Message


class ChatMemberInline(admin.TabularInline):
    model = ChatMember
    extra = 1
    autocomplete_fields = ["user"]
    fields = ["user", "last_read_message", "joined_at"]
    readonly_fields = ["last_read_message", "joined_at"]
    verbose_name = "member (and read cursor)"
    verbose_name_plural = "members and their read cursors"


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "created_at", "last_activity_at"]
    search_fields = ["title", "members__username"]
    readonly_fields = ["created_at", "last_message", "last_activity_at"]
    inlines = [ChatMemberInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Messages are read-only here: what users wrote is not edited behind their backs."""

    list_display = ["id", "chat", "author", "created_at", "text"]
    list_filter = ["chat"]
    search_fields = ["text"]
    list_select_related = ["chat", "author"]
    ordering = ["-id"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False
