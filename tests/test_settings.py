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


def test_defaults_match_the_seed_and_the_spec():
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


def test_dotenv_is_parsed_with_comments_export_quotes(tmp_path):
    text = "\n".join([
        "# a comment",
        "",
        "export BUFFER_MAX_SIZE=2_000",
        "BUFFER_ALERT_THRESHOLD = 70.5   # inline comment",
        "ORACLE_PASSWORD='p#ss word'",
        'BACKUP_FILE_PATH="/var/lib/tagpipe/backup dir"',
        "LOG_LEVEL=debug",
    ])
    s = load(dotenv=text, tmp_path=tmp_path)
    assert s.buffer_max_size == 2000 and s.buffer_alert_threshold == 70.5
    assert s.oracle_password == "p#ss word"
    assert s.backup_file_path == "/var/lib/tagpipe/backup dir"
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
    p.write_text("A=1\nexport B = two words # c\nC=''\n")
    assert parse_dotenv(str(p)) == {"A": "1", "B": "two words", "C": ""}


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
