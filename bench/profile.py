"""Sum up a py-spy profile of the service (collapsed stacks, as `BENCH_PROFILE` records them).

    python -m bench.profile FILE [--top N] [--match TEXT]

Prints the share of samples per thread, per part of the WebSocket handshake (each sample goes
to the innermost frame that names a part: a JWT check inside the user's loading is "JWT"), and
the functions with the most samples, inclusive and on their own. Recorded with `--gil`, a
sample is a moment the thread held the GIL: Python running on a CPU, not waiting.
"""

from __future__ import annotations

import argparse
from collections import Counter

# (part, substrings of a frame "function (file:line)"), in no particular order: the innermost
# frame of a stack that matches one decides.
PARTS = (
    ("JWT (signature, claims)", ("jwt/api_jwt.py", "jwt/api_jws.py", "get_validated_token")),
    ("user load (query, model)", ("get_user", "access_token_check", "users_and_memberships")),
    ("membership read", ("memberships (", "positions.py")),
    ("reconcile after subscribing", ("_reconcile",)),
    ("subscribe (fan-out, Redis)", ("fanout.py", "channel_layer.py", "redis/", "pubsub.py")),
    ("database driver", ("psycopg", "django/db/")),
    ("thread hops (asgiref, executor)", ("asgiref/", "concurrent/futures", "threading.py")),
    ("consumer (accept, outbox, limits)", ("consumers.py", "outbox.py", "limits.py", "channels/")),
    ("session watch", ("sessions.py",)),
    ("daphne, Twisted, autobahn", ("daphne/", "twisted/", "autobahn/", "txaio/")),
    ("uvicorn, websockets, httptools", ("uvicorn/", "websockets/", "httptools")),
    ("HTTP requests (Django, DRF)", ("django/core/handlers", "rest_framework/", "asgi_http.py")),
    ("event loop", ("asyncio/", "uvloop")),
)


def parse(path: str, match: str | None) -> list[tuple[str, list[str], int]]:
    stacks = []
    with open(path) as lines:
        for line in lines:
            line = line.rstrip()
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if match and not any(match in frame for frame in frames):
                continue
            stacks.append((frames[0], frames[1:], int(count)))
    return stacks


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for part, needles in PARTS:
            if any(needle in frame for needle in needles):
                return part
    return "other"


def short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} {where.rstrip(')').rsplit('/', 1)[-1]}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", help="only stacks with a frame containing this text")
    args = parser.parse_args()
    stacks = parse(args.file, args.match)
    total = sum(count for _, _, count in stacks) or 1
    threads: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for thread, frames, count in stacks:
        threads[thread.split(": ", 1)[-1].strip('"') if ": " in thread else thread] += count
        parts[part_of(frames)] += count
        for frame in {short(frame) for frame in frames}:
            inclusive[frame] += count
        if frames:
            own[short(frames[-1])] += count
    print(f"{total} samples")
    for title, counter, limit in (
        ("threads", threads, 8),
        ("parts", parts, len(PARTS) + 1),
        ("inclusive", inclusive, args.top),
        ("own", own, args.top),
    ):
        print(f"-- {title}")
        for name, count in counter.most_common(limit):
            print(f"{100 * count / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
