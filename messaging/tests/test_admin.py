"""Staff create chats and members in the admin; cursors come by themselves."""

import pytest
from django.test import Client, override_settings

from conftest import PASSWORD
from messaging import services
from messaging.models import Chat, ChatMember, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(make_user) -> Client:
    admin = make_user("admin", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    return client


def inline_form(users) -> dict[str, str]:
    data = {
        "memberships-TOTAL_FORMS": str(len(users)),
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    for i, user in enumerate(users):
        data[f"memberships-{i}-user"] = str(user.pk)
    return data


def test_creating_a_chat_with_members_in_the_admin_gives_each_a_cursor(
    staff_client, user, other_user
):
    response = staff_client.post(
        "/admin/messaging/chat/add/", {"title": "Team", **inline_form([user, other_user])}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    chat = Chat.objects.get(title="Team")
    cursors = ChatMember.objects.filter(chat=chat)
    assert {c.user_id for c in cursors} == {user.pk, other_user.pk}
    assert all(c.last_read_message_id is None for c in cursors)


def test_adding_the_same_member_twice_in_the_admin_is_a_form_error(staff_client, user):
    response = staff_client.post(
        "/admin/messaging/chat/add/", {"title": "Dup", **inline_form([user, user])}
    )

    assert response.status_code == 200  # The form comes back with the error.
    assert not Chat.objects.filter(title="Dup").exists()


def test_admin_pages_render(staff_client, user, make_chat, make_message):
    chat = make_chat(user, title="Shown")
    make_message(chat, user, "findable text")

    pages = [
        "/admin/messaging/chat/",
        f"/admin/messaging/chat/{chat.pk}/change/",
        "/admin/messaging/message/?q=findable",
        f"/admin/messaging/message/?chat__id__exact={chat.pk}",
        f"/admin/messaging/message/{Message.objects.get().pk}/change/",
    ]
    for page in pages:
        response = staff_client.get(page)
        assert response.status_code == 200, page
    assert b"findable text" in staff_client.get(pages[2]).content


def test_messages_are_read_only_in_the_admin(staff_client, user, make_chat, make_message):
    message = make_message(make_chat(user), user, "original")

    staff_client.post(f"/admin/messaging/message/{message.pk}/change/", {"text": "edited"})

    message.refresh_from_db()
    assert message.text == "original"
    assert staff_client.get("/admin/messaging/message/add/").status_code == 403


def test_admin_login_page_renders_a_login_form_that_logs_staff_in(client, make_user):
    make_user("admin-login", is_staff=True)

    page = client.get("/admin/login/")

    assert page.status_code == 200
    assert page.templates[0].name == "admin/login.html"
    html = page.content.decode()
    for field in ('name="username"', 'name="password"', 'name="csrfmiddlewaretoken"'):
        assert field in html
    logged_in = client.post(
        "/admin/login/?next=/admin/", {"username": "admin-login", "password": PASSWORD}
    )
    assert (logged_in.status_code, logged_in["Location"]) == (302, "/admin/")
    assert client.get("/admin/").status_code == 200


def test_the_member_picker_searches_users(staff_client, make_user):
    make_user("zoe-searchable")

    response = staff_client.get(
        "/admin/autocomplete/",
        {"app_label": "messaging", "model_name": "chatmember", "field_name": "user", "term": "zoe"},
    )

    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["zoe-searchable"]


# --- v2: owners, direct chats, fixed member rows, tombstones ---------------------------------


def change_form(chat: Chat, members: list[ChatMember], **fields: str) -> dict[str, str]:
    """The change form of a chat as the admin page posts it, members unchanged."""
    data = {
        "title": chat.title,
        "owner": str(chat.owner_id or ""),
        "memberships-TOTAL_FORMS": str(len(members)),
        "memberships-INITIAL_FORMS": str(len(members)),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        **fields,
    }
    for i, member in enumerate(members):
        data[f"memberships-{i}-id"] = str(member.pk)
        data[f"memberships-{i}-chat"] = str(chat.pk)
        data[f"memberships-{i}-user"] = str(member.user_id)
    return data


def test_a_saved_member_row_cannot_be_given_to_another_user(
    staff_client, user, other_user, make_user, make_chat
):
    chat = make_chat(user, [other_user])
    members = list(ChatMember.objects.filter(chat=chat).order_by("pk"))
    intruder = make_user()
    form = change_form(chat, members)
    form["memberships-1-user"] = str(intruder.pk)  # The disabled field, forged.

    response = staff_client.post(f"/admin/messaging/chat/{chat.pk}/change/", form)

    assert response.status_code == 302
    assert set(chat.members.values_list("pk", flat=True)) == {user.pk, other_user.pk}


def test_the_owner_is_editable_and_an_outsider_owner_is_made_a_member(
    staff_client, user, other_user, make_user, make_chat
):
    chat = make_chat(user, [other_user])
    newcomer = make_user()
    members = list(ChatMember.objects.filter(chat=chat).order_by("pk"))

    response = staff_client.post(
        f"/admin/messaging/chat/{chat.pk}/change/",
        change_form(chat, members, owner=str(newcomer.pk), title="Handed over"),
    )

    assert response.status_code == 302
    chat.refresh_from_db()
    assert (chat.owner_id, chat.title) == (newcomer.pk, "Handed over")
    assert chat.members.filter(pk=newcomer.pk).exists()


def test_a_direct_chats_two_members_are_fixed_in_the_admin(staff_client, user, other_user):
    chat, _ = services.chat_direct_open(user=user, other_id=other_user.pk)

    intruder_id = services.chat_create(creator=user).pk and other_user.pk

    page = staff_client.get(f"/admin/messaging/chat/{chat.pk}/change/").content.decode()
    staff_client.post(
        f"/admin/messaging/chat/{chat.pk}/change/",
        {**inline_form([user]), "memberships-0-user": str(intruder_id)},
    )

    assert str(other_user) in page  # Shown...
    assert 'name="memberships-0-DELETE"' not in page  # ...but not removable,
    assert "memberships-__prefix__" not in page  # and no row to add one.
    listing = staff_client.get("/admin/messaging/chat/?kind__exact=direct").content.decode()
    assert f"/admin/messaging/chat/{chat.pk}/change/" in listing
    assert set(chat.members.values_list("pk", flat=True)) == {user.pk, other_user.pk}


def test_staff_delete_messages_as_announced_tombstones(
    staff_client,
    user,
    other_user,
    make_chat,
    make_message,
    published,
    django_capture_on_commit_callbacks,
):
    chat = make_chat(user, [other_user])
    kept = make_message(chat, user, "kept")
    gone = make_message(chat, other_user, "gone")
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            "/admin/messaging/message/",
            {"action": "delete_as_tombstones", "_selected_action": [str(gone.pk)]},
        )

    assert response.status_code == 302
    gone.refresh_from_db()
    assert (gone.deleted, gone.text) == (True, "")
    assert Message.objects.get(pk=kept.pk).text == "kept"
    changes = [p for _, p in published if p["type"] == "chat.change"]
    assert [(p["message_id"], p["new"]) for p in changes] == [(gone.pk, False)]


@override_settings(CHAT_MAX_MEMBERS=2)
def test_the_admin_refuses_more_members_than_chat_max_members(
    staff_client, user, other_user, make_user
):
    response = staff_client.post(
        "/admin/messaging/chat/add/",
        {"title": "Crowd", **inline_form([user, other_user, make_user()])},
    )

    assert response.status_code == 200  # The form comes back with the error.
    assert not Chat.objects.filter(title="Crowd").exists()
