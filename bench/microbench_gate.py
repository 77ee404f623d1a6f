"""What the membership gate adds per delivered event (docs/performance.md).

Hands the same chat event to 100 local sockets through `GroupFanout.hand_out` (the gate: a
revision compare per event, a membership lookup per socket) and, as the baseline, by a plain
loop over the same sockets (what the fan-out did before the gate). The sockets do nothing with
the event, so the difference is the gate's own cost.

Run: `.venv/bin/python -m bench.microbench_gate`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

SOCKETS = 100
EVENTS = 20_000


class Socket:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.events = 0

    def on_chat_event(self, event: Any, revision: int, joined: int | None) -> None:
        self.events += 1

    def on_group_event(self, event: Any) -> None:
        self.events += 1


async def measure() -> dict[str, float]:
    from channels.layers import InMemoryChannelLayer

    from messaging.fanout import GroupFanout
    from messaging.positions import ChatMembers

    members = ChatMembers(1, {user_id: 1 for user_id in range(SOCKETS)})

    async def load(chat_id: int) -> ChatMembers:
        return members

    fanout = GroupFanout(InMemoryChannelLayer(), load_members=load)
    sockets = tuple(Socket(user_id) for user_id in range(SOCKETS))
    fanout.listeners["chat.1"] = set(sockets)
    event = {"type": "chat.change", "group": "chat.1", "chat_id": 1, "seq": 1, "rev": 1}
    fanout.hand_out(event)  # Reads the members once.
    await asyncio.sleep(0.01)
    ways = {
        "gated": lambda: fanout.hand_out(event),
        "plain loop": lambda: [socket.on_group_event(event) for socket in sockets],
    }
    results = {}
    for name, deliver in ways.items():
        started = time.perf_counter()
        for _ in range(EVENTS):
            deliver()
        results[name] = (time.perf_counter() - started) / EVENTS / SOCKETS * 1e9
    return results


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings_test")
    import django

    django.setup()
    for name, nanoseconds in asyncio.run(measure()).items():
        print(f"{name}: {nanoseconds:.0f} ns per delivery ({SOCKETS} sockets, {EVENTS} events)")


if __name__ == "__main__":
    main()
