"""Accounts: the User model, registration (a service), login and token refresh (simplejwt), and
the WebSocket's token authentication (`auth.py`)."""
