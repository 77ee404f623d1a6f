"""The serving layer, between the network and the apps: our daphne (`server.py`: graceful
SIGTERM, close codes, access log without secrets), the bound on what daphne buffers for a client
that does not read (`backpressure.py`), Django's HTTP handler with each request in one thread hop
(`asgi_http.py`), and the WebSocket handshake's Origin check (`origin.py`)."""
