"""Where tag values come from: the simulator and Modbus TCP, behind one small interface.

MELSEC PLCs over the MC protocol (3E binary): ``mc.McPlc`` (codec in ``pipeline/poller/melsec.py``).
"""
