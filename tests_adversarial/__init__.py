"""Adversarial suite: fuzzing, attacks, limits, faults and leaks (see docs/reliability.md)."""
