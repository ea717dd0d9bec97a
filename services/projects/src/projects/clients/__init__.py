"""Clients: the tenants every project belongs to."""
