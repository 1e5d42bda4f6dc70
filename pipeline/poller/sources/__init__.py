"""Where tag values come from, behind one small interface (``base.Source``):

- ``simulator.SimulatedPlc``: the demo plant (no PLC needed);
- ``modbus.ModbusPlc``: Modbus TCP (pymodbus);
- ``mc.McPlc``: MELSEC PLCs over the MC protocol, 3E binary (codec in ``pipeline/poller/melsec.py``);
- ``opcua.OpcUaPlc``: OPC UA servers (asyncua).

Each protocol's module is imported only when a PLC uses it.
"""
