"""Feeding the log: stream discovery, durable consumers, producer sequence tracking and gap healing."""
