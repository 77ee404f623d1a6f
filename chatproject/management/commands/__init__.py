"""`wait_for_database` and `migrate_with_lock`: what the container entrypoint runs before
serving."""
