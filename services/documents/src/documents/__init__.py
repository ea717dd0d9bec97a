"""Baton documents service."""
