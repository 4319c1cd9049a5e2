"""Prefect tasks: thin wrappers over bloasis.pipeline, with retries on transient errors."""
