"""Test harnesses that talk to real services (Docker engine, PostgreSQL), never in-process fakes."""
