"""Shared pytest fixtures; helpers live in tests/support.py."""
