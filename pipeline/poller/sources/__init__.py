"""Where tag values come from: the simulator and Modbus TCP, behind one small interface."""
