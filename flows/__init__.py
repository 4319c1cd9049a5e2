"""Prefect flows: the daily pipeline and the outbox relay."""
