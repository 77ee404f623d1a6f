"""Tests of the project's configuration: database settings and deployment files."""
