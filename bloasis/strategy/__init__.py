"""Tier 2 (sector analysis) and Tier 3 (per-profile and per-user strategies)."""
