"""Issue 12 item 8: the .env reader reads a file as systemd's EnvironmentFile= does (checked
against systemd's own parser where it runs here), and refuses with one line what systemd
would read differently or not at all: not UTF-8, a BOM, NUL, ``export``, no ``=``."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import REPO, REQUIRE_ALL, run
from pipeline.common.errors import ConfigError
from pipeline.common.settings import load_settings, parse_dotenv, parse_env_bytes

# systemd's environment.d generator reads its files with the parser EnvironmentFile= uses
# (src/basic/env-file.c), then expands $VAR references: the files below have no '$'.
GENERATOR = "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"

# Everything the rules cover that systemd and we both accept (no '$', no empty values:
# environment.d refuses "KEY=" while EnvironmentFile= reads it as empty).
SAMPLE = (
    "# comment\n"
    "   ; another comment\n"
    "PLAIN=value\n"
    "INLINE_HASH=x # not a comment\n"
    "HASH_AT_START=#still value\n"
    "  SPACED  =   interior   blanks kept   \n"
    "TABBED=a\tb\n"
    "SQ='single # x'  tail\n"
    "SQ2='it''s'\n"
    'DQ="dq \\"quoted\\" back\\\\slash \\`tick\\` \\n kept"\n'
    "DQ_CONCAT=\"a\" 'b'c\n"
    "ESC=back\\\\slash\\#hash\\ space\n"
    "CONT=first\\\nsecond\n"
    "QUOTE_INSIDE=a'b'\"c\"\n"
    "MULTI='line one\nline two'\n"
    "UNICODE=계기 값 ünï\n"
    "DUP=first\n"
    "DUP=second wins\n"
    "ORACLE_DSN=scott/t#ger;x@db1:1521/XE\n"
)

EXPECTED = {
    "PLAIN": "value",
    "INLINE_HASH": "x # not a comment",
    "HASH_AT_START": "#still value",
    "SPACED": "interior   blanks kept",
    "TABBED": "a\tb",
    "SQ": "single # xtail",
    "SQ2": "its",
    "DQ": 'dq "quoted" back\\slash `tick` \\n kept',
    "DQ_CONCAT": "abc",
    "ESC": "back\\slash#hash space",
    "CONT": "firstsecond",
    "QUOTE_INSIDE": "a'b'\"c\"",
    "MULTI": "line one\nline two",
    "UNICODE": "계기 값 ünï",
    "DUP": "second wins",
    "ORACLE_DSN": "scott/t#ger;x@db1:1521/XE",
}


def _unquote_generator_value(v: str) -> str:
    """The generator prints values C-escaped inside double quotes when they need it."""
    if not (len(v) >= 2 and v[0] == v[-1] == '"'):
        return v
    out, i, body = [], 0, v[1:-1]
    simple = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", '"': '"', "$": "$", "`": "`"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(simple.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def systemd_reads(text: str, tmp_path) -> dict[str, str]:
    if not os.path.exists(GENERATOR):
        msg = f"{GENERATOR} missing (Debian package systemd)"
        if REQUIRE_ALL:
            pytest.fail(msg + " and TAGPIPE_REQUIRE_ALL=1")
        pytest.skip(msg)
    d = tmp_path / "xdg" / "environment.d"
    d.mkdir(parents=True)
    (d / "10-tagpipe.conf").write_text(text, encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    r = subprocess.run([GENERATOR], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out: dict[str, str] = {}
    # Values may span lines (MULTI): a line starting NAME= starts the next assignment.
    current = None
    for line in r.stdout.split("\n"):
        key, sep, rest = line.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and (current is None or out[current].count('"') % 2 == 0 or not out[current].startswith('"')):
            current = key
            out[key] = rest
        elif current is not None and line:
            out[current] += "\n" + line
    out = {k: v for k, v in out.items() if k in EXPECTED}
    return {k: _unquote_generator_value(v) for k, v in out.items()}


def test_our_reader_and_systemds_parser_read_the_same_file_the_same_way(tmp_path):
    ours = parse_env_bytes(SAMPLE.encode("utf-8"), "sample.env")
    assert ours == EXPECTED
    assert systemd_reads(SAMPLE, tmp_path) == EXPECTED


def test_documented_rules_systemds_generator_cannot_show(tmp_path):
    # An empty value is empty (EnvironmentFile= reads it so); CR LF line ends work.
    assert parse_env_bytes(b"A=\r\nB=''\r\nC=1\r\n") == {"A": "", "B": "", "C": "1"}


@pytest.mark.parametrize("data, where, words", [
    (b"A=1\nB=caf\xe9\n", ":2 (byte offset 9)", "is not UTF-8 (byte 0xe9)"),
    (b"\xef\xbb\xbfA=1\n", ":1 (byte offset 0)", "byte-order mark"),
    (b"A=1\nB=x\x00y\n", ":2 (byte offset 7)", "NUL byte"),
    (b"A=1\nexport B=2\n", ":2 (byte offset 4)", "export"),
    (b"A=1\n\nhunter2-secret\n", ":3 (byte offset 5)", "not a KEY=VALUE line"),
    (b"A-B=1\n", ":1 (byte offset 0)", "not a variable name"),
    (b"A='open\nB=2\n", ":1 (byte offset 2)", "never closed"),
    (b"# note \\\nA=1\n", ":1 (byte offset 0)", "comment ends with a backslash"),
])
def test_what_systemd_would_read_differently_is_refused_in_one_line(tmp_path, data, where, words):
    path = tmp_path / ".env"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        parse_dotenv(str(path))
    msg = str(e.value)
    assert "\n" not in msg and f"{path}{where}" in msg and words in msg, msg
    assert "hunter2" not in msg and "caf" not in msg


def test_a_process_with_a_non_utf8_env_file_exits_2_with_one_line(tmp_path):
    (tmp_path / ".env").write_bytes("BUFFER_MAX_SIZE=1000\nWEB_LANG=ko # 한국어\n".encode("euc-kr"))
    r = run(["-m", "pipeline", "settings"], tmp_path)
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and ".env:2 (byte offset 35)" in lines[0] and "not UTF-8" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_an_env_path_that_is_a_folder_or_unreadable_is_refused(tmp_path):
    (tmp_path / "dir.env").mkdir()
    with pytest.raises(ConfigError, match="dir.env: cannot be read"):
        load_settings({}, env_file=str(tmp_path / "dir.env"))
    assert load_settings({}, env_file=str(tmp_path / "absent.env")).ring_name == "tagpipe"
