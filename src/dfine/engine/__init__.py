"""Training and checkpoint machinery."""
