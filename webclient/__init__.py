"""The chat page at `/`: one view rendering an HTML shell, and its static ES modules."""
