"""tagpipe: PLC tag values from the plant floor into Oracle (or SQLite) without losing one."""

__version__ = "0.1.0"
