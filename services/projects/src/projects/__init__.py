"""Baton projects service: clients (the tenants) and their projects, with an outbox of their changes."""
