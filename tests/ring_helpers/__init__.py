"""Helpers of the ring tests: ``role.py`` (run as a separate interpreter) and ``proc.py``."""
