"""Model architectures, their kinds and their registry."""
