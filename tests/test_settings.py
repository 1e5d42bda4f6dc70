"""The one settings loader: defaults, .env, environment (wins), validation, masking."""

from __future__ import annotations

import os
import subprocess
from collections import namedtuple

import pytest

from conftest import REPO, run
from pipeline.common import settings as S
from pipeline.common.errors import ConfigError
from pipeline.common.settings import SETTINGS, load_settings, parse_dotenv


def load(env: dict | None = None, dotenv: str | None = None, tmp_path=None):
    path = None
    if dotenv is not None:
        path = tmp_path / ".env"
        path.write_text(dotenv)
    return load_settings(env=env or {}, env_file=str(path) if path else None)


def bad(name: str, value: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load({name: value})
    return e.value


def test_defaults_match_the_original_feature_and_the_spec():
    s = load()
    assert (s.buffer_max_size, s.buffer_alert_threshold, s.buffer_batch_size, s.buffer_write_interval_s) == (100_000, 80.0, 500, 0.5)
    assert (s.oracle_port, s.oracle_pool_min, s.oracle_pool_max, s.db_retry_max) == (1521, 2, 5, 3)
    assert (s.ring_name, s.sqlite_path, s.backup_file_path, s.oracle_table) == ("tagpipe", "./data/tagpipe.db", "./backup", "TAG_DATA")
    assert (s.web_host, s.web_port, s.shutdown_timeout_s, s.log_level) == ("127.0.0.1", 8080, 10.0, "INFO")
    assert not s.oracle_configured
    for setting in SETTINGS:  # every declared default passes its own validation
        assert getattr(s, setting.attr) == setting.default
    with pytest.raises(Exception):
        s.buffer_max_size = 5  # frozen


def test_dotenv_is_parsed_with_comments_and_quotes(tmp_path):
    text = "\n".join([
        "# a comment",
        "; also a comment (systemd)",
        "",
        "BUFFER_MAX_SIZE=2_000",
        "BUFFER_ALERT_THRESHOLD = 70.5   ",
        "ORACLE_PASSWORD=p#ss word  # all of this is the value, as systemd reads it",
        f'BACKUP_FILE_PATH="{tmp_path}/backup dir"',
        "LOG_LEVEL=debug",
    ])
    s = load(dotenv=text, tmp_path=tmp_path)
    assert s.buffer_max_size == 2000 and s.buffer_alert_threshold == 70.5
    assert s.oracle_password == "p#ss word  # all of this is the value, as systemd reads it"
    assert s.backup_file_path == f"{tmp_path}/backup dir"
    assert s.log_level == "DEBUG"


def test_environment_wins_over_dotenv(tmp_path):
    s = load({"BUFFER_BATCH_SIZE": "250"}, "BUFFER_BATCH_SIZE=800\nBUFFER_MAX_SIZE=5000\n", tmp_path)
    assert s.buffer_batch_size == 250 and s.buffer_max_size == 5000


def test_missing_dotenv_is_not_an_error(tmp_path):
    assert load_settings(env={}, env_file=str(tmp_path / "absent.env")).buffer_max_size == 100_000


@pytest.mark.parametrize(
    "name, value",
    [
        ("BUFFER_MAX_SIZE", "0"),
        ("BUFFER_MAX_SIZE", "-5"),
        ("BUFFER_MAX_SIZE", "lots"),
        ("BUFFER_MAX_SIZE", "1.5"),
        ("BUFFER_MAX_SIZE", ""),
        ("BUFFER_MAX_SIZE", "999999999999"),
        ("BUFFER_ALERT_THRESHOLD", "0"),
        ("BUFFER_ALERT_THRESHOLD", "-80"),
        ("BUFFER_ALERT_THRESHOLD", "nan"),
        ("BUFFER_ALERT_THRESHOLD", "inf"),
        ("BUFFER_ALERT_THRESHOLD", "80%"),
        ("BUFFER_BATCH_SIZE", "0"),
        ("BUFFER_WRITE_INTERVAL", "0"),
        ("BUFFER_WRITE_INTERVAL", "half"),
        ("ORACLE_PORT", "70000"),
        ("ORACLE_RETRY_MAX", "-1"),
        ("WEB_PORT", "http"),
        ("LOG_LEVEL", "LOUD"),
        ("RING_NAME", "a/b"),
        ("RING_NAME", "x" * 65),
        ("RING_NAME", ""),
        ("ORACLE_TABLE", "TAG DATA; DROP"),
        ("SHUTDOWN_TIMEOUT", "-1"),
    ],
)
def test_bad_value_gives_one_line_naming_setting_and_value(name, value):
    e = bad(name, value)
    msg = str(e)
    assert "\n" not in msg
    assert e.name == name and name in msg
    assert repr(value) in msg


def test_cross_checks_name_the_setting():
    e = bad("ORACLE_POOL_MIN", "9")
    assert "ORACLE_POOL_MAX" in str(e)
    with pytest.raises(ConfigError, match="ORACLE_SERVICE_NAME"):
        load({"ORACLE_HOST": "db1"})
    assert load({"ORACLE_HOST": "db1", "ORACLE_SERVICE_NAME": "XE"}).oracle_configured


def test_ring_larger_than_shared_memory_is_refused(monkeypatch):
    real = os.statvfs
    Fake = namedtuple("Fake", "f_blocks f_frsize f_bavail")

    def small_shm(path):  # a 64 MB /dev/shm: the edge nothing real can provide here
        return Fake(16384, 4096, 16384) if path == "/dev/shm" else real(path)

    monkeypatch.setattr(os, "statvfs", small_shm)
    assert load({"BUFFER_MAX_SIZE": "1000000"}).buffer_max_size == 1_000_000  # 64.0 MB fits
    e = bad("BUFFER_MAX_SIZE", "2000000")
    assert "shared memory" in str(e) and "'2000000'" in str(e)


def test_bad_dotenv_line_names_file_and_line_without_echoing_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(dotenv="BUFFER_MAX_SIZE=10\nhunter2-secret\n", tmp_path=tmp_path)
    assert ".env:2" in str(e.value) and "hunter2" not in str(e.value)
    with pytest.raises(ConfigError, match="BUFFER_MAX_SIZE"):
        load(dotenv="BUFFER_MAX_SIZE=zero\n", tmp_path=tmp_path)


def test_secrets_are_masked_in_repr_masked_and_errors():
    s = load({"ORACLE_PASSWORD": "hunter2", "ORACLE_WALLET_PASSWORD": "w4llet"})
    assert s.oracle_password == "hunter2"
    assert "hunter2" not in repr(s) and "w4llet" not in repr(s)
    m = s.masked()
    assert m["ORACLE_PASSWORD"] == S.SECRET_MASK and m["ORACLE_WALLET_PASSWORD"] == S.SECRET_MASK
    assert load().masked()["ORACLE_PASSWORD"] == ""  # an empty secret shows as empty
    e = ConfigError("ORACLE_PASSWORD", "hunter2", "too short", secret=True)
    assert "hunter2" not in str(e) and e.value == S.SECRET_MASK


def test_every_setting_is_declared_once_with_a_doc():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert all(s.doc and s.name.isupper() for s in SETTINGS)
    aliases = [a for s in SETTINGS for a in s.aliases]
    assert not set(aliases) & set(names) and len(aliases) == len(set(aliases))
    table = S.settings_table_markdown()
    assert all(f"`{n}`" in table for n in names + aliases)
    assert set(S.settings_names()) == set(names + aliases)  # what web.create_app accepts as test settings


def test_loader_returns_the_typed_class_with_typed_fields():
    s = load({"WEB_PORT": "9090", "BUFFER_ALERT_THRESHOLD": "75"})
    assert type(s) is S.Settings
    assert type(s.web_port) is int and type(s.buffer_alert_threshold) is float and s.buffer_alert_threshold == 75.0
    for setting in SETTINGS:
        assert type(getattr(s, setting.attr)) is {"int": int, "float": float}.get(setting.kind, str), setting.name


@pytest.mark.parametrize("attr, value", [("web_port", "8080"), ("web_port", 80.0), ("buffer_max_size", True),
                                          ("ring_name", 7), ("health_max_lag_s", "30")])
def test_settings_of_the_wrong_type_are_refused(attr, value):
    with pytest.raises(ConfigError) as e:
        S.Settings(**{attr: value})
    assert e.value.name == attr.upper() and "must be of type" in str(e.value)


def test_built_settings_are_validated_too():
    import dataclasses

    with pytest.raises(ConfigError, match="WEB_PORT"):
        S.Settings(web_port=0)
    with pytest.raises(ConfigError, match="ORACLE_POOL_MAX"):
        dataclasses.replace(load(), oracle_pool_min=9)
    assert S.Settings(buffer_alert_threshold=70).buffer_alert_threshold == 70.0


@pytest.mark.parametrize("old, new, attr", [
    ("SHUTDOWN_TIMEOUT", "SHUTDOWN_TIMEOUT_S", "shutdown_timeout_s"),
    ("BUFFER_WRITE_INTERVAL", "BUFFER_WRITE_INTERVAL_S", "buffer_write_interval_s"),
    ("ORACLE_RETRY_MAX", "DB_RETRY_MAX", "db_retry_max"),
    ("DB_PROBE_MIN_INTERVAL", "DB_PROBE_MIN_INTERVAL_S", "db_probe_min_interval_s"),
    ("DB_PROBE_MAX_INTERVAL", "DB_PROBE_MAX_INTERVAL_S", "db_probe_max_interval_s"),
    ("SQLITE_BUSY_TIMEOUT", "SQLITE_BUSY_TIMEOUT_S", "sqlite_busy_timeout_s"),
])
def test_old_names_are_read_as_aliases(old, new, attr, tmp_path):
    assert getattr(load({old: "7"}), attr) == 7
    assert getattr(load({new: "6"}), attr) == 6
    assert getattr(load(dotenv=f"{old}=5\n", tmp_path=tmp_path), attr) == 5
    # Both names in one source: the same value is fine, two values are a bad setting.
    assert getattr(load({old: "4", new: " 4"}), attr) == 4
    with pytest.raises(ConfigError) as e:
        load({old: "4", new: "3"})
    msg = str(e.value)
    assert e.value.name == new and old in msg and "'3'" in msg and "'4'" in msg and "\n" not in msg
    # The environment wins over the file, whichever name either uses.
    assert getattr(load({new: "2"}, f"{old}=9\n", tmp_path), attr) == 2
    assert getattr(load({old: "2"}, f"{new}=9\n", tmp_path), attr) == 2
    e = bad(old, "-1")  # a bad value names the name it was given under
    assert e.name == old and "'-1'" in str(e)


def test_ring_sizing_uses_the_ring_layout(monkeypatch):
    from shm.layout import segment_bytes

    real = os.statvfs
    Fake = namedtuple("Fake", "f_blocks f_frsize f_bavail")
    size = segment_bytes(1000)  # /dev/shm exactly as large as a ring of 1000 records
    monkeypatch.setattr(os, "statvfs", lambda p: Fake(size, 1, size) if p == "/dev/shm" else real(p))
    assert load({"BUFFER_MAX_SIZE": "1000"}).buffer_max_size == 1000
    assert "shared memory" in str(bad("BUFFER_MAX_SIZE", "1001"))


def test_ring_name_rule_is_the_rings_own():
    from shm.segment import check_ring_name

    for name in ("ok_name-1", "a" * 64, "a" * 65, "a.b", "a/b", ""):
        try:
            check_ring_name(name)
            ring_ok = True
        except ValueError:
            ring_ok = False
        try:
            load({"RING_NAME": name})
            settings_ok = True
        except ConfigError:
            settings_ok = False
        assert ring_ok == settings_ok, name


def test_parse_dotenv_returns_raw_strings(tmp_path):
    p = tmp_path / "x.env"
    p.write_text("A=1\n B = two words # c\nC=''\n")
    assert parse_dotenv(str(p)) == {"A": "1", "B": "two words # c", "C": ""}


def run_py(code: str, **env) -> subprocess.CompletedProcess:
    return run(["-c", code], REPO, **env)


def test_process_with_bad_setting_exits_2_with_one_line(tmp_path):
    r = run_py("from pipeline.common.process import start_process; start_process('poller', env_file=None)", BUFFER_MAX_SIZE="0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "BUFFER_MAX_SIZE" in lines[0] and "'0'" in lines[0]


def test_settings_command_masks_the_password(tmp_path):
    r = run(["-m", "pipeline", "settings"], tmp_path, ORACLE_PASSWORD="hunter2", BUFFER_MAX_SIZE="4242")
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout and "ORACLE_PASSWORD=********" in r.stdout
    assert "BUFFER_MAX_SIZE=4242" in r.stdout


# --- issue 12 item 15: a password inside a connect string is masked wherever it shows -------
DSN_FORMS = [
    ("scott/tiger-9f8e@db1:1521/XE", ["tiger-9f8e"], "scott/********@db1:1521/XE"),
    ('scott/"ti@g/er-9f8e"@db1/XE', ["ti@g/er-9f8e"], "scott/********@db1/XE"),
    ("scott/pw-9f8e@tns_alias", ["pw-9f8e"], "scott/********@tns_alias"),
    ("oracle://scott:pw-9f8e@db1:1521/XE", ["pw-9f8e"], "oracle://scott:********@db1:1521/XE"),
    ("tcps://db1:2484/XE?wallet_location=/w&wallet_password=wpw-9f8e", ["wpw-9f8e"],
     "tcps://db1:2484/XE?wallet_location=/w&wallet_password=********"),
    ("(DESCRIPTION=(ADDRESS=(HOST=db1)(PORT=1521))(CONNECT_DATA=(SERVICE_NAME=XE))(PASSWORD=pw-9f8e))", ["pw-9f8e"],
     "(DESCRIPTION=(ADDRESS=(HOST=db1)(PORT=1521))(CONNECT_DATA=(SERVICE_NAME=XE))(PASSWORD=********))"),
]


@pytest.mark.parametrize("dsn, secrets, shown", DSN_FORMS)
def test_a_password_inside_oracle_dsn_is_masked_in_repr_masked_and_errors(dsn, secrets, shown):
    s = load({"ORACLE_DSN": dsn})
    assert s.oracle_dsn == dsn  # the writer still connects with it
    assert s.masked()["ORACLE_DSN"] == shown
    assert S.credentials_in(dsn) and all(x in S.credentials_in(dsn) for x in secrets)
    with pytest.raises(ConfigError) as e:  # an error showing the value: BUFFER given twice differently
        load({"ORACLE_DSN": dsn, "ORACLE_POOL_MIN": "9"})
    for text in (repr(s), str(s.masked()), str(e.value)):
        assert not any(x in text for x in secrets), text


@pytest.mark.parametrize("dsn", ["db1:1521/XE", "tns_alias", "/@wallet_alias", "scott@db1/XE",
                                 "(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST=db1)(PORT=1521))(CONNECT_DATA=(SERVICE_NAME=XE)))"])
def test_connect_strings_without_credentials_are_shown_unchanged(dsn):
    assert load({"ORACLE_DSN": dsn}).masked()["ORACLE_DSN"] == dsn and S.credentials_in(dsn) == ()


def test_a_bad_setting_error_masks_the_password_of_the_value_it_shows(tmp_path):
    # ORACLE_HOST has the same masking (someone may write user/pw@host there): it is not a
    # host name, so it is refused, and the one line must not carry the password.
    e = bad("ORACLE_HOST", "scott/pw-9f8e@db1")
    assert "pw-9f8e" not in str(e) and "ORACLE_HOST" in str(e) and "********" in str(e)


def test_settings_command_and_effective_settings_line_mask_the_dsn_password(tmp_path):
    dsn = "scott/pw-9f8e7d@127.0.0.1:1/XE"
    r = run(["-m", "pipeline", "settings"], tmp_path, ORACLE_DSN=dsn)
    assert r.returncode == 0, r.stderr
    assert "pw-9f8e7d" not in r.stdout and "ORACLE_DSN=scott/********@127.0.0.1:1/XE" in r.stdout
    r = run_py("from pipeline.common.process import start_process; start_process('writer', env_file=None)",
               ORACLE_DSN=dsn, LOG_LEVEL="INFO")
    assert r.returncode == 0, r.stderr
    assert "effective settings" in r.stderr + r.stdout and "pw-9f8e7d" not in r.stderr + r.stdout


# --- issue 12 items 6 and 7: unusable paths and listen addresses are refused at start -------
def test_paths_of_the_wrong_kind_are_refused_in_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    cases = [
        ("BACKUP_FILE_PATH", str(a_file), "is an existing file, not a folder"),
        ("BACKUP_FILE_PATH", str(a_file / "sub"), f"cannot be created: {a_file} is a file"),
        ("SQLITE_PATH", str(a_dir), "is a folder, not a file"),
        ("SQLITE_PATH", str(a_file / "db.sqlite"), f"cannot be created: {a_file} is a file"),
        ("TAGS_FILE", str(a_dir), "is a folder, not a file"),
        ("ORACLE_WALLET_LOCATION", str(a_file), "is an existing file, not a folder"),
        ("ORACLE_CONFIG_DIR", str(a_file), "is an existing file, not a folder"),
        ("SQLITE_PATH", "/dev/null", "exists and is not a regular file"),
        ("BACKUP_FILE_PATH", "x" * 5000, "cannot be used: File name too long"),
    ]
    for name, value, reason in cases:
        e = bad(name, value)
        assert "\n" not in str(e) and e.name == name and reason in str(e), (name, value, str(e))
    ok = load({"BACKUP_FILE_PATH": str(a_dir), "SQLITE_PATH": str(tmp_path / "new" / "deeper" / "t.db"),
               "TAGS_FILE": str(tmp_path / "absent.toml")})  # missing: the writer creates it / the poller says so
    assert ok.backup_file_path == str(a_dir)


def test_the_writer_refuses_a_backup_path_that_is_a_file_with_exit_2_and_one_line(tmp_path):
    (tmp_path / "backup").write_text("not a folder")
    r = run(["-m", "pipeline.writer"], tmp_path, BACKUP_FILE_PATH=str(tmp_path / "backup"), RING_NAME="h12c-never")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "BACKUP_FILE_PATH" in lines[0] and "not a folder" in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "plant-web.example", "web01.", "fe80::1%eth0"])
def test_web_host_accepts_addresses_and_host_names(host):
    assert load({"WEB_HOST": host}).web_host == host


@pytest.mark.parametrize("host", ["999.1.1.1", "1.2.3", "256.0.0.1", "-bad.example", "a..b", "under_score", "a b", "", "x" * 254, "1.2.3.4.5"])
def test_web_host_refuses_what_cannot_be_an_address_or_name(host):
    e = bad("WEB_HOST", host)
    assert "WEB_HOST" in str(e) and repr(host) in str(e)
