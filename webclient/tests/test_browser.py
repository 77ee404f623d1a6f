"""The chat page in a real Chromium, against two real daphne instances (DEBUG=0, static files
collected into the manifest storage) sharing the test database and a private Redis.

Pages find things by their accessible names (the contract's "The web client at /"), as a
screen reader would. Screenshots of the main views go to $WEBCLIENT_SCREENSHOTS when it is set
(the README's come from there), else to a temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from liveserver.processes import DaphneServer
from messaging import services
from messaging.models import Chat

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.multiprocess,
    pytest.mark.django_db(transaction=True),
]

DESKTOP = {"width": 1200, "height": 760}
PHONE = {"width": 390, "height": 780}
WAIT_MS = 15_000  # Longest wait for something that must show (a small, shared machine).
PASSWORD = "a-long-passphrase-4821"
_names = iter(range(1, 10_000))


def unique(name: str) -> str:
    return f"{name}{next(_names)}"


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=WAIT_MS)
    return playwright_expect(target)


# --- Pages ---------------------------------------------------------------------------------------

# Injected by Playwright before the page's own scripts (so not subject to its CSP): records CSP
# violations (markup parsed from data would trip them) and any dialog a script opens.
WATCH_SCRIPT = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


class Pages:
    """Browser contexts (one per person), closed at the end of the test."""

    def __init__(self, chromium: Any) -> None:
        self.chromium = chromium
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []

    def open(
        self,
        instance: DaphneServer,
        *,
        user: User | None = None,
        access_lifetime: timedelta | None = None,
        viewport: dict[str, int] = DESKTOP,
        color_scheme: str = "light",
        record: list[str] | None = None,
    ) -> Any:
        context = self.chromium.new_context(
            base_url=instance.http_url(""),
            viewport=viewport,
            color_scheme=color_scheme,
            reduced_motion="reduce",
        )
        context.set_default_timeout(WAIT_MS)
        context.add_init_script(WATCH_SCRIPT)
        if record is not None:
            context.on("request", lambda request: record.append(request.url))
        self.contexts.append(context)
        page = context.new_page()
        if record is not None:
            page.on("websocket", lambda socket: record.append(socket.url))
        page.on("pageerror", lambda error: self.errors.append(f"{error}"))
        # Shown by pytest with a failing test's output.
        page.on("console", lambda message: print(f"console {message.type}: {message.text}"))
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.goto("/")
        if user is not None:
            sign_in_with_tokens(page, user, access_lifetime)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(chromium: Any, cluster: Any) -> Iterator[Pages]:
    opened = Pages(chromium)
    yield opened
    try:
        for context in opened.contexts:
            for page in context.pages:
                assert page.evaluate("window.__cspViolations") == [], page.url
        assert opened.errors == [], opened.errors
        assert opened.dialogs == [], opened.dialogs
    finally:
        opened.close()


def sign_in_with_tokens(page: Any, user: User, access_lifetime: timedelta | None = None) -> None:
    """What logging in leaves in the page's storage, minted here (saves a password hash)."""
    refresh = RefreshToken.for_user(user)
    access = refresh.access_token
    if access_lifetime is not None:
        access.set_exp(lifetime=access_lifetime)
    page.evaluate(
        "([access, refresh]) =>"
        " localStorage.setItem('chat.session', JSON.stringify({access, refresh}))",
        [str(access), str(refresh)],
    )
    page.reload()
    expect(page.get_by_role("button", name="New chat")).to_be_visible()


def register(page: Any, username: str, password: str = PASSWORD) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("button", name="New chat")).to_be_visible()


def chats(page: Any) -> Any:
    return page.get_by_role("list", name="Chats").get_by_role("listitem")


def chat_item(page: Any, name: str) -> Any:
    return chats(page).filter(has_text=name)


def messages(page: Any) -> Any:
    return page.get_by_role("list", name="Messages").get_by_role("listitem")


def composer(page: Any) -> Any:
    return page.get_by_role("textbox", name="Message", exact=True)


def send(page: Any, text: str) -> None:
    box = composer(page)
    box.fill(text)
    box.press("Enter")


def message_texts(page: Any) -> list[str]:
    return page.locator("ol.messages > li .msg-text").all_text_contents()


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    directory = Path(os.environ.get("WEBCLIENT_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        page.mouse.move(0, 0)  # No hover effect left where the last click was.
        path = directory / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    return take


# --- Data ----------------------------------------------------------------------------------------


class Data:
    """The tests' database writes and reads, on the `orm` worker thread."""

    def __init__(self, orm: Callable[..., Any]) -> None:
        self.orm = orm

    def person(self, name: str) -> User:
        """A user who signs in with minted tokens (no password: the instances' production
        hasher would not know the tests' fast one)."""
        return self.orm(User.objects.create_user, username=unique(name), password=None)

    def user(self, username: str) -> User:
        return self.orm(User.objects.get, username=username)

    def group(self, creator: User, *members: User, title: str = "") -> Chat:
        return self.orm(
            services.chat_create, creator=creator, title=title, member_ids=[m.pk for m in members]
        )

    def post(self, chat: Chat, author: User, *texts: str) -> None:
        def send_all() -> None:
            for text in texts:
                services.message_send(author=author, chat_id=chat.pk, text=text, client_id=None)

        self.orm(send_all)

    def count(self, chat: Chat, **filters: Any) -> int:
        return self.orm(lambda: chat.messages.filter(**filters).count())


@pytest.fixture
def data(orm: Callable[..., Any], transactional_db: None) -> Data:
    return Data(orm)


# --- Tests ---------------------------------------------------------------------------------------


def test_two_users_on_two_instances_chat_with_badges_receipts_and_typing(
    cluster: Any, pages: Pages, data: Data, screenshot: Callable[[Any, str], Path]
) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = pages.open(cluster.one)
    screenshot(alice, "login")
    # The API's field errors show next to the field they are about.
    alice.get_by_label("Username").fill(alice_name)
    alice.get_by_label("Password").fill("short")
    alice.get_by_role("button", name="Register").click()
    expect(alice.get_by_label("Password")).to_have_accessible_description(re.compile("too short"))
    register(alice, alice_name)
    bob = pages.open(cluster.two)
    register(bob, bob_name)

    chat = data.group(data.user(alice_name), data.user(bob_name), title="Team")
    for page in (alice, bob):  # Chats made outside the page appear on the next load.
        page.reload()
        expect(chat_item(page, "Team")).to_be_visible()

    chat_item(alice, "Team").click()
    composer(alice).fill("Hello")  # Typing, not sent yet.
    expect(chat_item(bob, "Team")).to_contain_text(f"{alice_name} is typing")
    composer(alice).press("Enter")
    send(alice, "How are you?")
    expect(chat_item(bob, "Team")).to_contain_text("2 unread")
    expect(chat_item(bob, "Team")).to_contain_text("How are you?")
    screenshot(bob, "chat-list-unread")

    chat_item(bob, "Team").click()
    expect(messages(bob)).to_have_count(2)
    assert message_texts(bob) == ["Hello", "How are you?"]
    expect(chat_item(bob, "Team")).not_to_contain_text("unread")
    expect(messages(alice).last).to_contain_text(f"Seen by {bob_name}")

    composer(bob).press_sequentially("Fine")
    expect(alice.get_by_role("main").get_by_text(f"{bob_name} is typing…")).to_be_visible()
    composer(bob).press("Shift+Enter")
    composer(bob).press_sequentially("and you?")
    composer(bob).press("Enter")
    expect(messages(alice)).to_have_count(3)
    assert message_texts(alice) == ["Hello", "How are you?", "Fine\nand you?"]
    expect(composer(bob)).to_have_value("")
    # Alice has the chat open: the reply is read at once, no badge, and Bob sees it seen.
    expect(chat_item(alice, "Team")).not_to_contain_text("unread")
    expect(messages(bob).last).to_contain_text(f"Seen by {alice_name}")
    expect(alice.get_by_text("Sending…")).to_have_count(0)
    expect(bob.get_by_text("Sending…")).to_have_count(0)
    assert message_texts(bob) == message_texts(alice)
    assert data.count(chat) == 3
    screenshot(alice, "chat-desktop")


def test_page_reconnects_after_its_instance_restarts_and_shows_what_it_missed(
    cluster: Any, pages: Pages, data: Data
) -> None:
    alice, bob = data.person("alice"), data.person("bob")
    chat = data.group(alice, bob, title="Outage")
    data.post(chat, bob, "before the restart")
    alice_page = pages.open(cluster.one, user=alice)
    bob_page = pages.open(cluster.two, user=bob)
    chat_item(alice_page, "Outage").click()
    chat_item(bob_page, "Outage").click()
    expect(messages(alice_page)).to_have_count(1)

    cluster.one.kill()
    expect(alice_page.get_by_text("Connection lost")).to_be_visible()
    send(alice_page, "written while offline")
    expect(messages(alice_page).last).to_contain_text("Waiting for the connection")
    # An edit of an old message: only `since_seq` (not `after`) brings it back.
    composer(bob_page).press("ArrowUp")
    bob_page.get_by_role("textbox", name="Edit message").fill("before the restart, edited")
    bob_page.get_by_role("textbox", name="Edit message").press("Enter")
    expect(messages(bob_page).first).to_contain_text("(edited)")
    missed = [f"missed {n}" for n in range(1, 6)]
    for text in missed:
        send(bob_page, text)
    expect(messages(bob_page)).to_have_count(6)

    started = time.monotonic()
    cluster.one.restart()
    expected = ["before the restart, edited", *missed, "written while offline"]
    expect(alice_page.get_by_text("Connection lost")).to_be_hidden()
    expect(messages(alice_page)).to_have_count(len(expected))
    expect(alice_page.get_by_text("Waiting for the connection")).to_have_count(0)
    print(f"page back in step {time.monotonic() - started:.1f} s after the restart began")
    assert message_texts(alice_page) == expected
    expect(messages(alice_page).first).to_contain_text("(edited)")
    expect(messages(bob_page)).to_have_count(len(expected))
    assert message_texts(bob_page) == expected
    assert data.count(chat, text="written while offline") == 1


def test_markup_and_javascript_links_render_as_text_and_run_nothing(
    cluster: Any, pages: Pages, data: Data
) -> None:
    alice, bob = data.person("alice"), data.person("bob")
    title = '<b onmouseover="window.__xss=1">Team</b>'
    data.group(alice, bob, title=title)
    payloads = [
        '<img src=x onerror="window.__xss=2">',
        "<script>window.__xss=3</script>",
        "javascript:window.__xss=4",
        "[click me](javascript:window.__xss=5)",
        '<a href="javascript:window.__xss=6">link</a>',
        '<svg onload="window.__xss=7"></svg> & &amp; &lt;',
    ]
    alice_page = pages.open(cluster.one, user=alice)
    bob_page = pages.open(cluster.two, user=bob)
    chat_item(alice_page, "Team").click()
    chat_item(bob_page, "Team").click()
    for text in payloads:
        send(alice_page, text)
    expect(messages(bob_page)).to_have_count(len(payloads))
    bob_page.reload()  # From history too, not only live.
    chat_item(bob_page, "Team").click()
    expect(messages(bob_page)).to_have_count(len(payloads))
    for page in (alice_page, bob_page):
        assert message_texts(page) == payloads
        expect(chat_item(page, "Team")).to_contain_text(title)
        expect(page.get_by_role("heading", name=title)).to_be_visible()
        chat_item(page, "Team").hover()
        for message in messages(page).all():
            message.hover()
        tags = page.evaluate(
            "[...document.querySelectorAll('#app *')].map((el) => el.tagName.toLowerCase())"
        )
        assert not {"img", "script", "svg", "b", "iframe", "object"} & set(tags)
        assert page.locator('a[href^="javascript:" i]').count() == 0
        assert page.evaluate("window.__xss") is None


def test_every_request_of_the_page_goes_to_its_own_origin(
    cluster: Any, pages: Pages, data: Data
) -> None:
    bob = data.person("bob")
    record: list[str] = []
    page = pages.open(cluster.one, record=record)
    name = unique("carol")
    register(page, name)
    chat = data.group(data.user(name), bob, title="Origins")
    # More than a page, so scrolling up loads an older one through `next`.
    data.post(chat, bob, *(f"older {n}" for n in range(1, 81)))
    page.reload()
    chat_item(page, "Origins").click()
    send(page, "a link https://example.com/x stays a link, not a request")
    expect(messages(page).last).not_to_contain_text("Sending")
    page.locator(".scroller").hover()
    for _ in range(20):
        page.mouse.wheel(0, -4000)
        if page.get_by_text("This is the beginning of the chat.").is_visible():
            break
        page.wait_for_timeout(150)
    expect(page.get_by_text("This is the beginning of the chat.")).to_be_visible()
    page.get_by_role("button", name="New chat").click()
    page.get_by_label("Search people").fill(bob.username[:3])
    page.wait_for_timeout(500)
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()

    http = f"http://127.0.0.1:{cluster.one.port}/"
    ws = f"ws://127.0.0.1:{cluster.one.port}/"
    assert any(url.startswith(ws) for url in record), record
    assert any("before=" in url for url in record), "an older page was loaded"
    foreign = [url for url in record if not (url.startswith(http) or url.startswith(ws))]
    assert foreign == [], foreign


def test_history_of_500_messages_scrolls_back_to_the_first(
    cluster: Any, pages: Pages, data: Data
) -> None:
    alice, bob = data.person("alice"), data.person("bob")
    chat = data.group(alice, bob, title="Long")
    data.post(chat, bob, *(f"message {n}" for n in range(1, 501)))
    page = pages.open(cluster.one, user=alice)
    chat_item(page, "Long").click()
    expect(messages(page).last).to_contain_text("message 500")
    started = time.monotonic()
    page.locator(".scroller").hover()
    beginning = page.get_by_text("This is the beginning of the chat.")
    for _ in range(200):
        if beginning.is_visible():
            break
        page.mouse.wheel(0, -3000)
        page.wait_for_timeout(50)
    expect(beginning).to_be_visible()
    print(f"scrolled back through 500 messages in {time.monotonic() - started:.1f} s")
    expect(messages(page)).to_have_count(500)
    assert message_texts(page) == [f"message {n}" for n in range(1, 501)]
    expect(messages(page).first).to_be_in_viewport()


def test_access_token_is_renewed_before_expiry_and_sent_on_the_open_socket(
    cluster: Any, pages: Pages, data: Data
) -> None:
    alice, bob = data.person("alice"), data.person("bob")
    data.group(alice, bob, title="Renewal")
    sockets: list[Any] = []
    frames: list[str] = []
    received: list[str] = []
    record: list[str] = []
    page = pages.open(cluster.two, record=record)

    def opened(socket: Any) -> None:
        sockets.append(socket)
        socket.on("framesent", lambda payload: frames.append(str(payload)))
        socket.on("framereceived", lambda payload: received.append(str(payload)))

    page.on("websocket", opened)
    with page.expect_request("**/users/token/refresh", timeout=WAIT_MS) as renewal:
        sign_in_with_tokens(page, alice, access_lifetime=timedelta(seconds=6))
    assert renewal.value.method == "POST"
    assert renewal.value.response().status == 200
    deadline = time.monotonic() + 10
    while not any('"type":"auth"' in frame for frame in frames) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    auth = [frame for frame in frames if '"type":"auth"' in frame]
    assert len(auth) == 1, frames
    stored = page.evaluate("JSON.parse(localStorage.getItem('chat.session')).access")
    assert stored in auth[0]
    page.wait_for_timeout(2_000)  # Past the first token's expiry.
    assert any('"type":"authenticated"' in frame for frame in received), received
    # The server closes a socket whose token expired (4401) unless it was renewed in band.
    assert len(sockets) == 1, "the socket lived on with the renewed token"
    chat_item(page, "Renewal").click()
    send(page, "still here")
    expect(messages(page).last).not_to_contain_text("Sending")


def call_api(
    instance: DaphneServer, method: str, path: str, user: User, body: Any = None
) -> tuple[int, Any]:
    """One HTTP call as `user`, from outside the page (another device, say)."""
    request = urllib.request.Request(
        instance.http_url(path),
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {RefreshToken.for_user(user).access_token}",
        },
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_chats_made_elsewhere_appear_live_and_the_owner_manages_members(
    cluster: Any, pages: Pages, data: Data, screenshot: Callable[[Any, str], Path]
) -> None:
    alice, bob, carol = data.person("alice"), data.person("bob"), data.person("carol")
    alice_page = pages.open(cluster.one, user=alice)
    bob_page = pages.open(cluster.two, user=bob)

    status, chat = call_api(
        cluster.one, "POST", "/chats", alice, {"title": "Planning", "member_ids": [bob.pk]}
    )
    assert status == 201
    expect(chat_item(bob_page, "Planning")).to_be_visible()  # chat_updated, no reload.
    status, direct = call_api(cluster.two, "POST", "/chats/direct", carol, {"user_id": bob.pk})
    assert status == 201
    expect(chat_item(bob_page, carol.username)).to_be_visible()  # The other person's name.

    chat_item(alice_page, "Planning").click()
    chat_item(bob_page, "Planning").click()
    send(alice_page, "Agenda for Monday")
    expect(messages(bob_page)).to_have_count(1)
    alice_page.get_by_role("button", name="Members").click()
    panel = alice_page.get_by_role("dialog", name="Members of Planning")
    expect(panel.get_by_role("list", name="Members").get_by_role("listitem")).to_have_count(2)
    panel.get_by_label("Chat name").fill("Planning Q3")
    panel.get_by_role("button", name="Rename").click()
    expect(chat_item(bob_page, "Planning Q3")).to_be_visible()
    expect(bob_page.get_by_role("heading", name="Planning Q3")).to_be_visible()
    screenshot(alice_page, "members-panel")
    panel.get_by_role("button", name=f"Remove {bob.username}").click()
    expect(panel.get_by_role("list", name="Members").get_by_role("listitem")).to_have_count(1)
    # chat_removed: gone from Bob's list, and his open chat closes.
    expect(chat_item(bob_page, "Planning Q3")).to_have_count(0)
    expect(bob_page.get_by_role("list", name="Messages")).to_be_hidden()
    expect(chat_item(bob_page, carol.username)).to_be_visible()
    alice_page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    assert direct["kind"] == "direct"


def test_edit_delete_and_react_show_on_both_pages(
    cluster: Any, pages: Pages, data: Data, screenshot: Callable[[Any, str], Path]
) -> None:
    alice, bob = data.person("alice"), data.person("bob")
    data.group(alice, bob, title="Edits")
    alice_page = pages.open(cluster.one, user=alice)
    bob_page = pages.open(cluster.two, user=bob)
    for page in (alice_page, bob_page):
        chat_item(page, "Edits").click()
    for text in ("one", "two", "three"):
        send(alice_page, text)
    expect(messages(bob_page)).to_have_count(3)

    composer(alice_page).press("ArrowUp")  # Edits your last message.
    editor = alice_page.get_by_role("textbox", name="Edit message")
    expect(editor).to_have_value("three")
    editor.fill("three, corrected")
    editor.press("Enter")
    expect(messages(bob_page).last).to_contain_text("three, corrected")
    expect(messages(bob_page).last).to_contain_text("(edited)")

    first = messages(bob_page).first
    first.hover()
    first.get_by_role("button", name="Add reaction").click()
    bob_page.get_by_role("button", name="React with 👍").click()
    reacted = messages(alice_page).first.get_by_role("button", name=re.compile("1, by"))
    expect(reacted).to_be_visible()
    chip = messages(bob_page).first.get_by_role("button", name=re.compile("1, by you"))
    expect(chip).to_have_attribute("aria-pressed", "true")

    second = messages(alice_page).nth(1)
    second.hover()
    second.get_by_role("button", name="Delete").click()
    alice_page.get_by_role("button", name="Yes, delete").click()
    expect(messages(bob_page).nth(1)).to_contain_text("This message was deleted.")
    expect(messages(alice_page).nth(1)).to_contain_text("This message was deleted.")
    # Bob may not edit or delete Alice's messages: no such buttons on them.
    messages(bob_page).first.hover()
    expect(messages(bob_page).first.get_by_role("button", name="Edit")).to_have_count(0)
    alice_page.get_by_role("list", name="Messages").click(position={"x": 5, "y": 5})
    screenshot(alice_page, "edits-and-reactions")
    chip.click()  # Toggles Bob's reaction off.
    expect(messages(alice_page).first.get_by_role("button", name=re.compile("by"))).to_have_count(0)


def test_log_out_revokes_the_refresh_token_and_forgets_both(
    cluster: Any, pages: Pages, data: Data
) -> None:
    alice = data.person("alice")
    page = pages.open(cluster.one, user=alice)
    refresh = page.evaluate("JSON.parse(localStorage.getItem('chat.session')).refresh")
    with page.expect_response("**/users/logout") as logout:
        page.get_by_role("button", name="Log out").click()
    assert logout.value.status == 204
    expect(page.get_by_label("Username")).to_be_visible()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert page.evaluate("localStorage.getItem('chat.session')") is None
    page.reload()
    expect(page.get_by_role("button", name="Register")).to_be_visible()
    request = urllib.request.Request(
        cluster.two.http_url("/users/token/refresh"),
        data=json.dumps({"refresh": refresh}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


# The client's pure rules, run in the page's own modules (as served, from the manifest storage).
CLIENT_RULES = """async () => {
  const { backoffDelay, BACKOFF } = await import("/static/webclient/js/backoff.js");
  const { Timeline, Store } = await import("/static/webclient/js/store.js");
  const delays = (random) => [0, 1, 2, 3, 6, 20].map((n) => backoffDelay(n, BACKOFF, random));
  const timeline = new Timeline(1, 7);
  timeline.putPage({ results: [{ id: 5, seq: 5, author_id: 8, text: "a" }], next: null }, {
    kind: "first",
  });
  const applied = [
    timeline.put({ id: 5, seq: 9, author_id: 8, text: "edited" }),
    timeline.put({ id: 5, seq: 6, author_id: 8, text: "older copy" }),
    timeline.put({ id: 6, seq: 10, author_id: 7, text: "mine", client_id: "c1" }),
    timeline.put({ id: 6, seq: 10, author_id: 7, text: "mine", client_id: "c1" }),
  ];
  const store = new Store({ id: 7, username: "me" });
  store.setChats([{ id: 1, title: "t", members: [], created_at: "2026-01-01T00:00:00Z",
                    last_message: { id: 5, author_id: 8, text: "a" }, unread_count: 1 }]);
  store.putNewMessage({ id: 5, chat_id: 1, author_id: 8, text: "a" });  // Counted already.
  store.putNewMessage({ id: 9, chat_id: 1, author_id: 8, text: "b" });
  store.putNewMessage({ id: 9, chat_id: 1, author_id: 8, text: "b" });  // Live and caught up.
  return {
    highest: delays(() => 0.999999), lowest: delays(() => 0),
    applied, text: timeline.messages.get(5).text, ids: timeline.ids, maxSeq: timeline.maxSeq,
    unread: store.chats.get(1).unread_count,
  };
}"""


def test_backoff_and_deduplication_rules_of_the_client(cluster: Any, pages: Pages) -> None:
    page = pages.open(cluster.one)
    rules = page.evaluate(CLIENT_RULES)
    # Full jitter: anywhere from 0 to min(cap, base * 2^attempt).
    assert rules["lowest"] == [0, 0, 0, 0, 0, 0]
    assert rules["highest"] == [499, 999, 1999, 3999, 29999, 29999]
    # A copy with a seq not above the one held changes nothing; a message is held once.
    assert rules["applied"] == [True, False, True, False]
    assert rules["text"] == "edited" and rules["ids"] == [5, 6] and rules["maxSeq"] == 10
    # The list said 1 unread (message 5); message 9 counts once however often it arrives.
    assert rules["unread"] == 2


def test_phone_layout_keyboard_and_dark_mode(
    cluster: Any, pages: Pages, data: Data, screenshot: Callable
) -> None:
    alice, bob, carol = data.person("alice"), data.person("bob"), data.person("carol")
    direct = data.group(alice, bob)
    data.post(direct, bob, "lunch?")
    team = data.group(alice, bob, carol, title="Design review")
    data.post(team, bob, "Mockups are in the shared folder: https://example.com/mockups")
    data.post(team, carol, "Looks great! One question about the empty state.")
    data.post(team, alice, "Shoot")

    phone = pages.open(cluster.one, user=alice, viewport=PHONE)
    expect(chat_item(phone, "Design review")).to_be_visible()
    assert not phone.get_by_role("list", name="Messages").is_visible()
    screenshot(phone, "phone-list")
    chat_item(phone, "Design review").click()
    expect(messages(phone)).to_have_count(3)
    assert not phone.get_by_role("list", name="Chats").is_visible()
    screenshot(phone, "phone-chat")
    phone.keyboard.press("Escape")
    expect(phone.get_by_role("list", name="Chats")).to_be_visible()

    # Keyboard only, on a desktop in dark mode: Tab to a chat, open it, write, send.
    page = pages.open(cluster.two, user=alice, color_scheme="dark")
    page.get_by_role("button", name="New chat").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog", name="New chat")).to_be_visible()
    expect(page.get_by_label("Search people")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name="New chat")).to_be_hidden()
    expect(page.get_by_role("button", name="New chat")).to_be_focused()
    # Chromium moves Tab's starting point out of a closed dialog a moment after focus is back
    # (a Tab within ~0.3 s of the Escape leaves the page); a person's next key comes later.
    page.wait_for_timeout(500)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link").filter(has_text="Design review")).to_be_focused()
    page.keyboard.press("Enter")
    expect(composer(page)).to_be_focused()
    page.keyboard.type("Typed without a mouse")
    page.keyboard.press("Enter")
    expect(messages(page)).to_have_count(4)
    expect(messages(page).last).not_to_contain_text("Sending")
    screenshot(page, "chat-dark")


def test_new_chat_finds_people_by_name_and_starts_a_direct_chat_and_a_group(
    cluster: Any, pages: Pages, data: Data
) -> None:
    alice, bob, carol = data.person("alice"), data.person("bob"), data.person("carol")
    alice_page = pages.open(cluster.one, user=alice)
    bob_page = pages.open(cluster.two, user=bob)

    alice_page.get_by_role("button", name="New chat").click()
    dialog = alice_page.get_by_role("dialog", name="New chat")
    dialog.get_by_label("Search people").fill(bob.username[:6].upper())  # Any case.
    people = dialog.get_by_role("list", name="People")
    expect(people.get_by_text(bob.username)).to_be_visible()
    dialog.get_by_role("button", name=f"Message {bob.username}").click()
    expect(dialog).to_be_hidden()
    # The direct chat shows the other person's name, on both sides, Bob's live.
    expect(chat_item(alice_page, bob.username)).to_be_visible()
    expect(chat_item(bob_page, alice.username)).to_be_visible()
    send(alice_page, "hello directly")
    chat_item(bob_page, alice.username).click()
    expect(messages(bob_page)).to_have_count(1)

    alice_page.get_by_role("button", name="New chat").click()
    for person in (bob, carol):
        dialog.get_by_label("Search people").fill(person.username)
        dialog.get_by_role("button", name=f"Add {person.username} to the group").click()
    dialog.get_by_label("Group name (optional)").fill("Three of us")
    dialog.get_by_role("button", name="Create group").click()
    expect(dialog).to_be_hidden()
    expect(chat_item(bob_page, "Three of us")).to_be_visible()
    assert data.orm(lambda: Chat.objects.get(title="Three of us").members.count()) == 3
