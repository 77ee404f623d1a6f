"""`make bench`: the benchmark harness (processes, seeding, load generator, reference server);
method and figures in docs/performance.md."""
