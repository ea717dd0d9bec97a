"""Baton audit: an append-only, hash-chained, signed log of every event the platform publishes."""
