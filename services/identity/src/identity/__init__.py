"""Baton identity service."""
