"""Accounts: the User model and its token version, registration and password change
(services), sessions (login, refresh, logout; simplejwt and its blacklist, `tokens.py`), and the
token authentication of HTTP and the WebSocket (`auth.py`)."""
