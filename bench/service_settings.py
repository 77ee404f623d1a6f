"""Settings of the service under test: the project's own, with the channel layer selectable.

`BENCH_CHANNEL_LAYER` picks the channel layer, so the candidates run on the same code:
`pipelined` (the project's `messaging.channel_layer.ShardedRedisPubSubLayer`: pipelined
publishing, sharded over REDIS_URL's servers),
`pubsub` (channels-redis's stock `RedisPubSubChannelLayer`) or `core` (`RedisChannelLayer`).
Everything else is `chatproject.settings`, driven by the same environment variables.
"""

import os

from chatproject.settings import *  # noqa: F403
from chatproject.settings import CHANNEL_LAYERS

LAYER_BACKENDS = {
    "pipelined": "messaging.channel_layer.ShardedRedisPubSubLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}

if choice := os.environ.get("BENCH_CHANNEL_LAYER"):
    CHANNEL_LAYERS["default"]["BACKEND"] = LAYER_BACKENDS[choice]
# The bench talks plain HTTP on loopback, whatever the deploy settings say about TLS.
SECURE_SSL_REDIRECT = False
