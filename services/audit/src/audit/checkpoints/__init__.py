"""Signed checkpoints of the chains and the public key that checks them."""
