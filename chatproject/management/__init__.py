"""Management commands of the project (see `commands/`)."""
