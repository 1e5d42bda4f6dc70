"""The test MC server checked with pymcprotocol, a client that shares no code with tagpipe's.

If the server misread the MC protocol reference in the same way as pipeline/poller/melsec.py,
the poller tests alone would pass; these pin the server to an independent implementation.
(pymcprotocol spells ZR numbers in hexadecimal; GX Works and tagpipe in decimal: the
binary frame carries the same number either way.)
"""

from __future__ import annotations

import pytest

pymcprotocol = pytest.importorskip("pymcprotocol")
from pymcprotocol.mcprotocolerror import MCProtocolError  # noqa: E402

from tests.poller_helpers.mc_server import McTestServer  # noqa: E402


@pytest.fixture
def server():
    s = McTestServer(points=4096, sizes={"D": 2000}).start()
    yield s
    s.stop()


def client(server: McTestServer, plctype: str):
    c = pymcprotocol.Type3E(plctype=plctype)
    c.setaccessopt(commtype="binary")
    c.connect("127.0.0.1", server.port)
    c._sock.settimeout(5)
    return c


@pytest.mark.parametrize("plctype", ["Q", "iQ-R"])
def test_word_and_bit_batch_reads_agree_with_pymcprotocol(server, plctype):
    server.set_words("D", 100, [1, 0xFFFF, 0x8000, 12345])
    server.set_words("W", 0x1A, [7, 8])
    server.set_words("ZR", 0x20, [42])
    server.set_words("SD", 210, [2026])
    server.set_words("TN", 3, [55])
    server.set_words("CN", 4, [66])
    server.set_words("R", 9, [99])
    server.set_bits("M", 10, [1, 0, 1, 1, 0, 0, 1])
    server.set_bits("X", 0x1F, [1, 1])
    server.set_bits("Y", 0x20, [1])
    server.set_bits("B", 0xA, [1])
    server.set_bits("L", 5, [1])
    server.set_bits("SM", 400, [1])
    c = client(server, plctype)
    try:
        assert c.batchread_wordunits("D100", 4) == [1, -1, -32768, 12345]
        assert c.batchread_wordunits("W1A", 2) == [7, 8]
        assert c.batchread_wordunits("ZR20", 1) == [42]  # pymcprotocol: ZR in hex
        assert c.batchread_wordunits("SD210", 1) == [2026]
        assert c.batchread_wordunits("TN3", 1) == [55]
        assert c.batchread_wordunits("CN4", 1) == [66]
        assert c.batchread_wordunits("R9", 1) == [99]
        assert c.batchread_bitunits("M10", 7) == [1, 0, 1, 1, 0, 0, 1]
        assert c.batchread_bitunits("X1E", 4) == [0, 1, 1, 0]
        assert c.batchread_bitunits("Y20", 1) == [1]
        assert c.batchread_bitunits("B0A", 2) == [1, 0]
        assert c.batchread_bitunits("L5", 1) == [1]
        assert c.batchread_bitunits("SM400", 1) == [1]
        # A bit device read in word units: 16 bits, the lowest device in bit 0.
        assert c.batchread_wordunits("M0", 1) == [(1 << 10) | (1 << 12) | (1 << 13)]  # M16 is in M16's word
    finally:
        c.close()
    sub = 2 if plctype == "iQ-R" else 0
    assert server.requests[(0x0401, sub)] == 8 and server.requests[(0x0401, sub + 1)] == 6


@pytest.mark.parametrize("plctype", ["Q", "iQ-R"])
def test_random_read_words_and_double_words_agree(server, plctype):
    server.set_words("D", 5, [0xFFFE])
    server.set_words("D", 300, [0x5678, 0x1234])  # low word first
    server.set_words("W", 0x10, [0xFFFF, 0xFFFF])
    c = client(server, plctype)
    try:
        words, dwords = c.randomread(["D5", "D301"], ["D300", "W10"])
    finally:
        c.close()
    assert words == [-2, 0x1234] and dwords == [0x12345678, -1]
    assert server.requests[(0x0403, 2 if plctype == "iQ-R" else 0)] == 1


def test_end_codes_for_bad_devices_and_ranges(server):
    c = client(server, "Q")
    try:
        with pytest.raises(MCProtocolError) as e:
            c.batchread_wordunits("D1999", 2)  # D has 2,000 points here
        assert e.value.errorcode == "0xC056"
        with pytest.raises(MCProtocolError) as e:
            c.batchread_wordunits("D0", 961)
        assert e.value.errorcode == "0xC051"
        with pytest.raises(MCProtocolError) as e:
            c.batchread_bitunits("D0", 1)  # bit units on a word device
        assert e.value.errorcode == "0xC05C"
        with pytest.raises(MCProtocolError) as e:
            c.randomread(["D1"], ["D1999"])
        assert e.value.errorcode == "0xC056"
        assert c.batchread_wordunits("D1998", 2) == [0, 0]  # the connection survives end codes
    finally:
        c.close()


def test_the_try_it_server_runs_standalone_with_moving_values(tmp_path):
    import subprocess
    import sys
    import time

    from tests.conftest import child_env, free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.poller_helpers.mc_server", "--port", str(port),
                             "--seconds", "20"], cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        c = pymcprotocol.Type3E(plctype="Q")
        c.connect("127.0.0.1", port)
        c._sock.settimeout(5)
        try:
            first = c.randomread([], ["D104"])[1][0]
            time.sleep(1.3)
            assert c.randomread([], ["D104"])[1][0] > first  # the seconds counter moves
            assert c.batchread_bitunits("SM400", 1) == [1]
        finally:
            c.close()
    finally:
        proc.terminate()
        proc.wait(10)
