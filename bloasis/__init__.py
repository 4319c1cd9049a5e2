"""BLOASIS: market regime and strategy pipeline."""

__version__ = "0.1.0"
