"""Test helpers of the poller's tests: a real Modbus TCP server and misbehaving sockets."""
