"""The poller: PLC tags into the ring (``python -m pipeline.poller``).

config (TOML tag definitions) -> sources (simulator, Modbus TCP) -> scheduler (one asyncio
task per poll group, report by exception in ``deadband``) -> ``shm.Producer.publish``.
``loadgen`` is the load mode, ``overflow_check`` the ``python -m pipeline overflow-check``
tool. Only ``sources/modbus.py`` imports pymodbus.
"""
