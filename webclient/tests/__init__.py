"""Tests of the chat page: its HTTP side, and the page itself in Chromium."""
