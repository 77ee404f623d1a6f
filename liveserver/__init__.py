"""Real server processes (daphne, Redis) for tests and benchmarks; see `liveserver.processes`."""
