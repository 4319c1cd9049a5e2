"""Benchmarks: each prints one JSON document on stdout (progress on stderr)."""
