"""Mechanism shared by every Baton service (never a domain rule)."""
