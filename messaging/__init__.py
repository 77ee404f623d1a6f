"""Chats, memberships (each membership is a read cursor) and messages: the models, the services
that make every write, the events published after commit, the REST views, the WebSocket consumer
and what delivers to it (fan-out, per-chat streams, batched writers, the channel layer)."""
