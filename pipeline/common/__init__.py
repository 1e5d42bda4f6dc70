"""Plumbing every process uses (settings, logging, exit codes, systemd notification).

The only part of ``pipeline`` that ``web`` may import.
"""
