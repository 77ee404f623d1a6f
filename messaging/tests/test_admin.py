"""Staff create chats and members in the admin; cursors come by themselves."""

import pytest
from django.test import Client

from conftest import PASSWORD
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
