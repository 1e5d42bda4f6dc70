"""Where tag values come from: the simulator and Modbus TCP, behind one small interface."""

# OPC UA (issue 14): sources/opcua.py (OpcUaPlc, asyncua), imported only when a PLC uses it.
