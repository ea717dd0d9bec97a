"""The hash chains: one per client plus the platform chain; appends, hashing and verification."""
