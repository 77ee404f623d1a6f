"""Tests of the messaging app: services, REST API, consumer, fan-out, streams, writers, and
several daphne processes through Redis (test_multiprocess.py)."""
