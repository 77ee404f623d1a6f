"""The service as it runs in production: two daphne processes sharing PostgreSQL and Redis.

Each test talks to real daphne instances (started by `liveserver.processes`) through real
WebSocket clients (`websockets`). The instances use the very PostgreSQL test database that
pytest-django created, so what a test commits (`transactional_db`) is theirs too; they share a
private Redis on a free port, never the shared one, so the outage test may stop and restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from accounts.models import User
from conftest import IN_CI, access_token
from liveserver.processes import (
    DaphneServer,
    ManagedProcess,
    RedisServer,
    database_url,
    start_all,
    stop_all,
)
from messaging.models import Chat, Message

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.multiprocess,
    pytest.mark.django_db(transaction=True),
]

# Longest wait for frames that must come (the machine is small and shared: be generous).
WAIT_SECONDS = 20.0
# Quiet time after the expected frames arrived, for a duplicate or a stray frame to show up.
SETTLE_SECONDS = 0.5
# The burst tests send 200+ events from one user in well under a second; the default budget
# (WS_RATE_BURST=200, WS_RATE_PER_SECOND=20) would answer some of them with `rate_limited`,
# which is not what these tests are about, so the instances get a larger one.
INSTANCE_ENV = {"WS_RATE_BURST": "10000", "WS_RATE_PER_SECOND": "10000"}
# Redis stays down at least this long, so the layer's receive loop (which retries about every
# second) fails to reconnect several times before Redis returns, as in a real outage.
OUTAGE_SECONDS = 3.0
# After Redis comes back, how long cross-instance delivery may take to resume.
RESUME_SECONDS = 20.0


# --- Processes -----------------------------------------------------------------------------------


@dataclass
class Cluster:
    redis: RedisServer
    one: DaphneServer
    two: DaphneServer


@contextlib.contextmanager
def running_cluster(log_dir: Path) -> Iterator[Cluster]:
    """A private Redis, then two daphne instances on the pytest-django test database."""
    shared_database = database_url(connection.settings_dict)
    redis = RedisServer(log_dir=log_dir)
    started: list[ManagedProcess] = [redis]
    try:
        redis.start(timeout=10)
        instance = {
            "database_url": shared_database,
            "redis_url": redis.url(),
            # Tokens minted here (AccessToken.for_user) must verify there.
            "secret_key": settings.SECRET_KEY,
            "extra_env": {**INSTANCE_ENV, "JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"]},
            "log_dir": log_dir,
        }
        one, two = DaphneServer(**instance), DaphneServer(**instance)
        started += [one, two]
        start_all(one, two, timeout=60)
        yield Cluster(redis=redis, one=one, two=two)
    finally:
        stop_all(*reversed(started))


@pytest.fixture(scope="module")
def redis_executable() -> str:
    path = shutil.which("redis-server")
    if path is None:
        if IN_CI:
            pytest.fail("CI=true but the redis-server executable is not installed")
        pytest.skip("needs the redis-server executable")
    return path


@pytest.fixture(scope="module")
def cluster(
    redis_executable: str, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Shared by the tests that leave Redis alone (starting daphne costs seconds)."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def own_cluster(redis_executable: str, transactional_db: None, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster for one test, which may break it."""
    with running_cluster(tmp_path) as started:
        yield started


# --- Data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    chat_id: int
    users: list[User]


@pytest.fixture
def make_group(
    transactional_db: None, make_user: Callable[..., User], make_chat: Callable[..., Chat]
) -> Callable[[int], Awaitable[Group]]:
    """`await make_group(n)`: n users, all members of one new chat (committed)."""

    def build(size: int) -> Group:
        users = [make_user() for _ in range(size)]
        chat = make_chat(users[0], users[1:])
        return Group(chat_id=chat.pk, users=users)

    async def make(size: int) -> Group:
        return await database_sync_to_async(build)(size)

    return make


def new_message(chat_id: int, text: str, client_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "new_message", "chat_id": chat_id, "text": text}
    if client_id is not None:
        event["client_id"] = client_id
    return event


# --- Clients -------------------------------------------------------------------------------------


@dataclass
class LiveSocket:
    """A real client socket; a background task records every frame it receives, in order."""

    name: str
    connection: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def read_forever(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.connection:
                self.frames.append(json.loads(raw))

    async def send(self, event: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(event))

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        return [
            frame["message"]
            for frame in self.frames
            if frame["type"] == "new_message" and frame["message"]["chat_id"] == chat_id
        ]

    def texts(self, chat_id: int) -> list[str]:
        return [message["text"] for message in self.messages(chat_id)]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame["type"] == kind]

    async def wait_until(
        self, condition: Callable[[LiveSocket], bool], what: str, seconds: float = WAIT_SECONDS
    ) -> None:
        deadline = time.monotonic() + seconds
        while not condition(self):
            if self.reader is not None and self.reader.done():
                raise AssertionError(f"{self.name} closed ({self.connection.close_code}) {what}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no {what} after {seconds} s; {len(self.frames)} frames, "
                    f"last ones: {self.frames[-3:]}"
                )
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.connection.close()
        if self.reader is not None:
            await self.reader


async def connect_to(server: DaphneServer, user: User, **options: Any) -> ClientConnection:
    """A WebSocket to `server` with `user`'s token; a refused handshake shows the server's log."""
    try:
        return await connect(
            server.ws_url(token=access_token(user)),
            open_timeout=10,
            close_timeout=2,
            proxy=None,
            **options,
        )
    except InvalidStatus as refused:
        raise AssertionError(f"{refused}\n{server.log_tail(60)}") from refused


OpenSocket = Callable[[DaphneServer, User, str], Awaitable[LiveSocket]]


@pytest.fixture
async def open_socket() -> AsyncIterator[OpenSocket]:
    """`await open_socket(server, user, "name")`: a connected LiveSocket, closed after the test."""
    opened: list[LiveSocket] = []

    async def open_(server: DaphneServer, user: User, name: str) -> LiveSocket:
        # The reader task drains the queue: never stall the server's sends.
        connection = await connect_to(server, user, max_queue=None)
        live = LiveSocket(name=name, connection=connection)
        live.reader = asyncio.create_task(live.read_forever())
        opened.append(live)
        return live

    yield open_
    for live in opened:
        await live.close()


async def wait_all(
    sockets: Iterable[LiveSocket], condition: Callable[[LiveSocket], bool], what: str
) -> None:
    await asyncio.gather(*(live.wait_until(condition, what) for live in sockets))


def count_of(chat_id: int, expected: int) -> Callable[[LiveSocket], bool]:
    return lambda live: len(live.messages(chat_id)) >= expected


def assert_once_each_in_id_order(live: LiveSocket, chat_id: int) -> list[int]:
    ids = [message["id"] for message in live.messages(chat_id)]
    assert ids == sorted(set(ids)), f"{live.name} got duplicates or disorder: {ids}"
    return ids


def assert_no_errors(sockets: Iterable[LiveSocket]) -> None:
    for live in sockets:
        assert live.of_type("error") == [], f"{live.name} got errors"


# --- HTTP ----------------------------------------------------------------------------------------

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, user: User) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {access_token(user)}"})
    with _direct.open(request, timeout=10) as response:
        return json.load(response)


def history_after(
    server: DaphneServer, user: User, chat_id: int, after: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """Every message with id > `after`, oldest first, following `next` page by page."""
    url: str | None = server.http_url(f"/chats/{chat_id}/messages?after={after}&limit={limit}")
    messages: list[dict[str, Any]] = []
    for _ in range(1000):
        if url is None:
            return messages
        page = get_json(url, user)
        messages.extend(page["results"])
        url = page["next"]
    raise AssertionError(f"`next` never became null: {url}")


# --- Tests ---------------------------------------------------------------------------------------


async def test_messages_and_read_receipts_cross_between_instances(
    cluster: Cluster, make_group: Callable[[int], Awaitable[Group]], open_socket: OpenSocket
) -> None:
    group = await make_group(3)
    alice, bob, carol = group.users
    chat = group.chat_id
    alice_1 = await open_socket(cluster.one, alice, "alice@1")
    bob_2 = await open_socket(cluster.two, bob, "bob@2")
    bob_1 = await open_socket(cluster.one, bob, "bob@1")  # Bob's other device, other instance.
    carol_2 = await open_socket(cluster.two, carol, "carol@2")
    everyone = [alice_1, bob_2, bob_1, carol_2]

    await alice_1.send(new_message(chat, "from instance one", client_id="a-1"))
    await wait_all(everyone, count_of(chat, 1), "message from instance one")
    first = alice_1.messages(chat)[0]
    assert first["client_id"] == "a-1"

    # Bob reads on instance two: the author (alice, on one) and bob's other socket (on one)
    # are told; the reading socket and carol are not.
    await bob_2.send({"type": "read_message", "chat_id": chat, "id": first["id"]})
    bob_read = {
        "type": "message_read",
        "chat_id": chat,
        "user_id": bob.pk,
        "message_id": first["id"],
    }
    await wait_all([alice_1, bob_1], lambda live: bob_read in live.frames, "bob's receipt")

    await bob_2.send(new_message(chat, "from instance two"))
    await wait_all(everyone, count_of(chat, 2), "message from instance two")
    second = bob_2.messages(chat)[1]

    await alice_1.send({"type": "read_message", "chat_id": chat, "id": second["id"]})
    alice_read = {
        "type": "message_read",
        "chat_id": chat,
        "user_id": alice.pk,
        "message_id": second["id"],
    }
    await wait_all([bob_2, bob_1], lambda live: alice_read in live.frames, "alice's receipt")

    await asyncio.sleep(SETTLE_SECONDS)
    for live in everyone:
        assert live.texts(chat) == ["from instance one", "from instance two"], live.name
    assert alice_1.of_type("message_read") == [bob_read]
    assert bob_1.of_type("message_read") == [bob_read, alice_read]
    assert bob_2.of_type("message_read") == [alice_read]
    assert carol_2.of_type("message_read") == []
    assert_no_errors(everyone)


async def test_redis_outage_keeps_sender_served_and_delivery_resumes(
    own_cluster: Cluster, make_group: Callable[[int], Awaitable[Group]], open_socket: OpenSocket
) -> None:
    group = await make_group(2)
    alice, bob = group.users
    chat = group.chat_id
    alice_1 = await open_socket(own_cluster.one, alice, "alice@1")
    bob_2 = await open_socket(own_cluster.two, bob, "bob@2")
    await alice_1.send(new_message(chat, "before"))
    await wait_all([alice_1, bob_2], count_of(chat, 1), "message before the outage")

    own_cluster.redis.stop()
    stopped = time.monotonic()
    # Each sender still gets its own message, and it is stored (read back over HTTP from the
    # other instance, which keeps serving).
    await alice_1.send(new_message(chat, "during, from one", client_id="d-1"))
    await alice_1.wait_until(lambda live: "during, from one" in live.texts(chat), "own message")
    await bob_2.send(new_message(chat, "during, from two", client_id="d-2"))
    await bob_2.wait_until(lambda live: "during, from two" in live.texts(chat), "own message")
    before_id = alice_1.messages(chat)[0]["id"]
    stored = await asyncio.to_thread(history_after, own_cluster.two, alice, chat, before_id)
    assert [m["text"] for m in stored] == ["during, from one", "during, from two"]
    assert [m["client_id"] for m in stored] == ["d-1", "d-2"]
    # A new socket opens all the same (its state comes from the database); the channel layer
    # subscribes it when Redis is back and announces that, and it catches up then (below).
    bob_1 = await open_socket(own_cluster.one, bob, "bob@1 (opened during the outage)")

    await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - stopped))
    own_cluster.redis.restart(timeout=10)
    restarted = time.monotonic()
    # The layer reconnects by itself; until it has, a broadcast may be lost (at most once),
    # so keep sending. Bob sends nothing meanwhile: whatever alice's messages he gets came
    # through Redis, not from a gap fill that his own sending would trigger.
    one_to_two = await _send_until_received(alice_1, bob_2, chat, "one to two")
    two_to_one = await _send_until_received(bob_2, alice_1, chat, "two to one")
    print(  # Reported with `pytest -s`: how long the reconnect took.
        f"\ndelivery resumed {one_to_two - restarted:.2f} s (one->two) and "
        f"{two_to_one - restarted:.2f} s (two->one) after Redis restarted"
    )

    # Nothing was lost for anyone: what Redis dropped was read from the database (the gap
    # behind the next message), once each and in id order, equal to the stored history.
    await asyncio.sleep(SETTLE_SECONDS)
    history = await asyncio.to_thread(history_after, own_cluster.one, bob, chat)
    for live in (alice_1, bob_2):
        assert_once_each_in_id_order(live, chat)
        assert live.messages(chat) == history, live.name
    # The socket opened during the outage has everything committed after it opened (what came
    # before, it would have read over HTTP), once each and in order.
    before_it = {"before", "during, from one", "during, from two"}
    opened_during = [m for m in history if m["text"] not in before_it]
    await bob_1.wait_until(
        lambda live: live.messages(chat) == opened_during, "everything since it opened"
    )
    assert_once_each_in_id_order(bob_1, chat)
    assert_no_errors([alice_1, bob_2, bob_1])


async def _send_until_received(
    sender: LiveSocket, receiver: LiveSocket, chat_id: int, label: str
) -> float:
    """Send numbered messages until the receiver gets one; the time it first did."""
    deadline = time.monotonic() + RESUME_SECONDS
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        await sender.send(new_message(chat_id, f"{label} #{attempt}"))
        for _ in range(25):  # 0.5 s for this one to cross.
            if any(text.startswith(label) for text in receiver.texts(chat_id)):
                return time.monotonic()
            await asyncio.sleep(0.02)
    raise AssertionError(f"{label}: no delivery {RESUME_SECONDS} s after Redis came back")


async def test_burst_of_200_arrives_complete_once_and_in_order_on_the_other_instance(
    cluster: Cluster, make_group: Callable[[int], Awaitable[Group]], open_socket: OpenSocket
) -> None:
    group = await make_group(2)
    sender_user, reader_user = group.users
    chat = group.chat_id
    sender = await open_socket(cluster.one, sender_user, "sender@1")
    reader = await open_socket(cluster.two, reader_user, "reader@2")
    texts = [f"burst {n}" for n in range(200)]

    for n, text in enumerate(texts):  # No waiting between frames.
        await sender.send(new_message(chat, text, client_id=f"b-{n}"))
    await wait_all([sender, reader], count_of(chat, 200), "all 200 messages")
    await asyncio.sleep(SETTLE_SECONDS)

    for live in (sender, reader):
        assert_once_each_in_id_order(live, chat)
        # One socket's messages get ids in the order it sent them.
        assert live.texts(chat) == texts, live.name
    assert [m["client_id"] for m in sender.messages(chat)] == [f"b-{n}" for n in range(200)]
    assert reader.messages(chat) == sender.messages(chat)
    stored = await database_sync_to_async(
        lambda: list(Message.objects.filter(chat_id=chat).order_by("id").values_list("id", "text"))
    )()
    assert stored == [(m["id"], m["text"]) for m in reader.messages(chat)]
    assert_no_errors([sender, reader])


async def test_twenty_concurrent_senders_on_both_instances_every_member_sees_all_once(
    cluster: Cluster, make_group: Callable[[int], Awaitable[Group]], open_socket: OpenSocket
) -> None:
    per_sender = 10
    group = await make_group(20)
    chat = group.chat_id
    servers = [cluster.one, cluster.two]
    sockets = await asyncio.gather(
        *(
            open_socket(servers[n % 2], user, f"user{n}@{n % 2 + 1}")
            for n, user in enumerate(group.users)
        )
    )

    async def send_all(n: int, live: LiveSocket) -> None:
        for k in range(per_sender):
            await live.send(new_message(chat, f"s{n} m{k}"))

    await asyncio.gather(*(send_all(n, live) for n, live in enumerate(sockets)))
    total = per_sender * len(sockets)
    await wait_all(sockets, count_of(chat, total), f"all {total} messages")
    await asyncio.sleep(SETTLE_SECONDS)

    history = await asyncio.to_thread(history_after, cluster.two, group.users[0], chat)
    assert len(history) == total
    for live in sockets:
        assert_once_each_in_id_order(live, chat)
        assert live.messages(chat) == history, live.name
    for n in range(len(sockets)):  # Each sender's messages in the order it sent them.
        mine = [text for text in sockets[0].texts(chat) if text.startswith(f"s{n} ")]
        assert mine == [f"s{n} m{k}" for k in range(per_sender)]
    assert_no_errors(sockets)


# --- Membership holds on every socket, on every instance --------------------------------------


def call(server: DaphneServer, user: User, method: str, path: str, body: Any = None) -> int:
    """One API call over HTTP; its status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.http_url(path),
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {access_token(user)}",
            "Content-Type": "application/json",
        },
    )
    try:
        with _direct.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def removed_from(chat_id: int) -> Callable[[LiveSocket], bool]:
    return lambda live: {"type": "chat_removed", "chat_id": chat_id} in live.frames


async def test_nothing_committed_after_a_removal_reaches_any_socket_of_the_removed_user(
    cluster: Cluster, make_group: Callable[[int], Awaitable[Group]], open_socket: OpenSocket
) -> None:
    group = await make_group(3)
    owner, leaver, stayer = group.users
    chat = group.chat_id
    owner_1 = await open_socket(cluster.one, owner, "owner@1")
    stayer_2 = await open_socket(cluster.two, stayer, "stayer@2")
    leaver_sockets = [
        await open_socket(cluster.one, leaver, "leaver@1"),
        await open_socket(cluster.two, leaver, "leaver@2"),
    ]
    await owner_1.send(new_message(chat, "before"))
    await wait_all([*leaver_sockets, stayer_2], count_of(chat, 1), "the message before")

    status = await asyncio.to_thread(
        call, cluster.two, owner, "DELETE", f"/chats/{chat}/members/{leaver.pk}"
    )
    assert status == 204
    # No pause: these commit after the removal, some before its news reaches any socket.
    for n in range(20):
        await owner_1.send(new_message(chat, f"after {n}"))
        await owner_1.send({"type": "typing", "chat_id": chat})
    await wait_all([owner_1, stayer_2], count_of(chat, 21), "every message after")
    await wait_all(leaver_sockets, removed_from(chat), "chat_removed")
    await asyncio.sleep(SETTLE_SECONDS)

    for live in leaver_sockets:
        assert live.texts(chat) == ["before"], live.name
        kinds = [frame["type"] for frame in live.frames]
        assert "typing" not in kinds and kinds.count("chat_removed") == 1, kinds
        assert kinds[-1] == "chat_removed", kinds
    assert_no_errors([owner_1, stayer_2, *leaver_sockets])


async def test_a_removal_racing_a_sockets_connect_is_never_missed(
    cluster: Cluster, make_group: Callable[[int], Awaitable[Group]], open_socket: OpenSocket
) -> None:
    """The removal commits while the socket is still reading its chats or subscribing: it
    must end up without the chat, whatever the order, on either instance."""
    group = await make_group(2)
    owner, flapper = group.users
    chat = group.chat_id
    owner_1 = await open_socket(cluster.one, owner, "owner@1")
    add = f"/chats/{chat}/members"
    late: list[LiveSocket] = []

    for round_ in range(8):
        server = (cluster.one, cluster.two)[round_ % 2]
        connecting = asyncio.create_task(open_socket(server, flapper, f"flapper#{round_}"))
        removing = asyncio.to_thread(
            call, cluster.one, owner, "DELETE", f"/chats/{chat}/members/{flapper.pk}"
        )
        live, status = await asyncio.gather(connecting, removing)
        assert status == 204
        await owner_1.send(new_message(chat, f"after removal {round_}"))
        late.append(live)
        # Committed (echoed) before the user is added back.
        await owner_1.wait_until(count_of(chat, round_ + 1), f"own message {round_}")
        status = await asyncio.to_thread(
            call, cluster.one, owner, "POST", add, {"user_ids": [flapper.pk]}
        )
        assert status == 200

    await owner_1.send(new_message(chat, "everyone back"))
    await wait_all(late, lambda live: "everyone back" in live.texts(chat), "the last message")
    await asyncio.sleep(SETTLE_SECONDS)
    for live in late:
        # Each socket opened during removal N sees none of the messages sent while its user
        # was out (N and, being opened before the later removals, none of those either).
        assert not [t for t in live.texts(chat) if t.startswith("after removal")], (
            live.name,
            live.texts(chat),
        )
        assert_once_each_in_id_order(live, chat)
    assert_no_errors([owner_1, *late])


async def test_membership_holds_across_a_redis_restart_with_its_announcements_lost(
    own_cluster: Cluster,
    make_group: Callable[[int], Awaitable[Group]],
    open_socket: OpenSocket,
    make_user: Callable[..., User],
) -> None:
    group = await make_group(3)
    owner, leaver, stayer = group.users
    joiner = await database_sync_to_async(make_user)()
    chat = group.chat_id
    owner_1 = await open_socket(own_cluster.one, owner, "owner@1")
    stayer_2 = await open_socket(own_cluster.two, stayer, "stayer@2")
    leaver_sockets = [
        await open_socket(own_cluster.one, leaver, "leaver@1"),
        await open_socket(own_cluster.two, leaver, "leaver@2"),
    ]
    joiner_2 = await open_socket(own_cluster.two, joiner, "joiner@2")
    await owner_1.send(new_message(chat, "before"))
    await wait_all([*leaver_sockets, stayer_2], count_of(chat, 1), "the message before")

    own_cluster.redis.stop()
    members = f"/chats/{chat}/members"
    removed = await asyncio.to_thread(
        call, own_cluster.one, owner, "DELETE", f"{members}/{leaver.pk}"
    )
    added = await asyncio.to_thread(
        call, own_cluster.two, owner, "POST", members, {"user_ids": [joiner.pk]}
    )
    assert (removed, added) == (204, 200)
    await owner_1.send(new_message(chat, "while Redis is down"))
    await owner_1.wait_until(lambda live: "while Redis is down" in live.texts(chat), "own message")
    await asyncio.sleep(OUTAGE_SECONDS)
    own_cluster.redis.restart(timeout=10)

    await _send_until_received(owner_1, stayer_2, chat, "after Redis")
    await joiner_2.wait_until(
        lambda live: any(t.startswith("after Redis") for t in live.texts(chat)),
        "messages after joining, without reconnecting",
        seconds=RESUME_SECONDS,
    )
    await wait_all(leaver_sockets, removed_from(chat), "chat_removed")
    await asyncio.sleep(SETTLE_SECONDS)

    for live in leaver_sockets:
        assert live.texts(chat) == ["before"], (live.name, live.texts(chat))
    assert joiner_2.of_type("chat_updated")[0]["chat"]["id"] == chat
    assert "before" not in joiner_2.texts(chat)  # History from before the join is not live.
    for live in (owner_1, stayer_2, joiner_2):
        assert_once_each_in_id_order(live, chat)
    assert_no_errors([owner_1, stayer_2, joiner_2, *leaver_sockets])


# --- Two Redis servers ---------------------------------------------------------------------------

# The instances' channel prefix, set so the test knows on which server each group lives.
SHARDED_PREFIX = "mp-sharded"


@dataclass
class ShardedCluster:
    redis: list[RedisServer]
    one: DaphneServer
    two: DaphneServer


@pytest.fixture
def sharded_cluster(
    redis_executable: str, transactional_db: None, tmp_path: Path
) -> Iterator[ShardedCluster]:
    """Two Redis servers (the channel layer's two shards) and two daphne instances using both."""
    servers = [RedisServer(log_dir=tmp_path), RedisServer(log_dir=tmp_path)]
    started: list[ManagedProcess] = list(servers)
    try:
        start_all(*servers, timeout=10)
        instance = {
            "database_url": database_url(connection.settings_dict),
            "redis_url": ",".join(server.url() for server in servers),
            "secret_key": settings.SECRET_KEY,
            "extra_env": {
                **INSTANCE_ENV,
                "JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"],
                "CHANNEL_LAYER_PREFIX": SHARDED_PREFIX,
            },
            "log_dir": tmp_path,
        }
        one, two = DaphneServer(**instance), DaphneServer(**instance)
        started += [one, two]
        start_all(one, two, timeout=60)
        yield ShardedCluster(redis=servers, one=one, two=two)
    finally:
        stop_all(*reversed(started))


def changes_since(server: DaphneServer, user: User, chat_id: int, seq: int) -> list[dict]:
    """The catch-up of docs/websocket.md: every change after `seq`, following `next`."""
    url: str | None = server.http_url(f"/chats/{chat_id}/messages?since_seq={seq}&limit=200")
    messages: list[dict[str, Any]] = []
    while url is not None:
        page = get_json(url, user)
        messages.extend(page["results"])
        url = page["next"]
    return messages


async def test_two_redis_servers_each_carry_their_chats_and_a_lost_one_costs_only_its_own(
    sharded_cluster: ShardedCluster,
    make_user: Callable[..., User],
    make_chat: Callable[..., Chat],
    open_socket: OpenSocket,
) -> None:
    from messaging.channel_layer import ShardedRedisPubSubLayer

    where = ShardedRedisPubSubLayer(
        hosts=[server.url() for server in sharded_cluster.redis], prefix=SHARDED_PREFIX
    )

    def chats_on_each_server() -> tuple[User, User, dict[int, int]]:
        alice, bob = make_user(), make_user()
        chat_of_shard: dict[int, int] = {}
        while len(chat_of_shard) < 2:  # About two chats, in most runs.
            chat = make_chat(alice, [bob])
            chat_of_shard.setdefault(where.shard_of_group(f"chat.{chat.pk}"), chat.pk)
        return alice, bob, chat_of_shard

    alice, bob, chat_of_shard = await database_sync_to_async(chats_on_each_server)()
    kept, lost = chat_of_shard[0], chat_of_shard[1]  # The second server will be stopped.
    alice_1 = await open_socket(sharded_cluster.one, alice, "alice@1")
    bob_2 = await open_socket(sharded_cluster.two, bob, "bob@2")

    # Both chats deliver across the instances, whichever server carries them.
    for chat in (kept, lost):
        await alice_1.send(new_message(chat, f"before, in {chat}"))
    await bob_2.wait_until(
        lambda live: (
            live.texts(kept) == [f"before, in {kept}"]
            and live.texts(lost) == [f"before, in {lost}"]
        ),
        "both chats' messages from the other instance",
    )
    seen_in_lost = bob_2.messages(lost)[-1]["seq"]

    sharded_cluster.redis[1].stop()
    await alice_1.send(new_message(kept, "during, in the kept chat"))
    await alice_1.send(new_message(lost, "during, in the lost chat"))
    await alice_1.wait_until(  # The sender is served in both (its own copy needs no Redis).
        lambda live: "during, in the lost chat" in live.texts(lost), "its own message"
    )
    # Live delivery goes on for the chat on the server that is up.
    await bob_2.wait_until(
        lambda live: live.texts(kept)[-1:] == ["during, in the kept chat"], "the kept chat, live"
    )
    # Not the other: its group lives on the stopped server (which shows the chats really are
    # spread over the two).
    await asyncio.sleep(SETTLE_SECONDS)
    assert "during, in the lost chat" not in bob_2.texts(lost)
    # But its message is stored: the catch-up brings it, whatever Redis does.
    caught_up = await asyncio.to_thread(changes_since, sharded_cluster.two, bob, lost, seen_in_lost)
    assert [m["text"] for m in caught_up] == ["during, in the lost chat"]

    sharded_cluster.redis[1].restart(timeout=10)
    # The layer subscribes again on the server that came back and announces it: bob's socket
    # reads what it missed there, once, in order, without anything new being sent.
    await bob_2.wait_until(
        lambda live: live.texts(lost)[-1:] == ["during, in the lost chat"],
        "the lost chat's message after the server came back",
        seconds=30,
    )
    await alice_1.send(new_message(lost, "after, in the lost chat"))
    await bob_2.wait_until(
        lambda live: live.texts(lost)[-1:] == ["after, in the lost chat"], "live delivery again"
    )
    await asyncio.sleep(SETTLE_SECONDS)
    for chat in (kept, lost):
        history = await asyncio.to_thread(history_after, sharded_cluster.one, alice, chat)
        for live in (alice_1, bob_2):
            assert_once_each_in_id_order(live, chat)
            assert live.messages(chat) == history, (live.name, chat)
    assert_no_errors([alice_1, bob_2])
