"""``python -m pipeline quarantine list | write-back`` against files an operator really
produces: huge corrupt lines, Excel's "CSV UTF-8" (BOM), full-width digits typed with an
IME, a missing file or a folder given as the file (real command, real files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.writer import backup as B
from pipeline.writer.quarantine import HEADER, Quarantine
from tests.conftest import child_env

ROW = "2025-01-15T10:30:45.123456,KRCWO12ELOA101,D100,1.5,GOOD,42,7,SQLITE_CONSTRAINT_CHECK,CHECK failed,ring,"


def _cmd(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "quarantine", *args], cwd=str(tmp), capture_output=True, text=True, timeout=60,
        env=child_env(BACKUP_FILE_PATH=str(tmp / "backup"), SQLITE_PATH=str(tmp / "data" / "t.db")),
    )


def _qdir(tmp: Path) -> Path:
    d = tmp / "backup" / "quarantine"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr, r.stderr


def _backups(tmp: Path) -> list[Path]:
    return sorted((tmp / "backup").glob("backup_*.csv"))


def _leftovers(tmp: Path) -> list[Path]:
    return list((tmp / "backup").glob(".writeback-*"))


def test_a_line_longer_than_the_csv_field_limit_is_listed_and_written_back(tmp_path):
    # A corrupt backup line of 200,000 characters is kept whole in ``raw``; before, list and
    # write-back died on csv's 131,072-character field limit.
    Quarantine(str(_qdir(tmp_path))).add_lines([B.BadLine(3, "x" * 200_000, "1 fields")], "backup_x.csv")
    [qfile] = _qdir(tmp_path).glob("quarantine_*.csv")
    with open(qfile, "a") as fh:
        fh.write(ROW + "\n")
    r = _cmd(tmp_path, "list")
    _no_traceback(r)
    assert r.returncode == 0 and f"{qfile}: 2 rows" in r.stdout
    r = _cmd(tmp_path, "write-back", str(qfile), "--skip-bad")
    _no_traceback(r)
    assert r.returncode == 6 and "line 2:" in r.stderr  # the long line is still bad: named, not fatal
    [back] = _backups(tmp_path)
    assert B.read_chunk(str(back)).rows == 1


def test_excel_utf8_bom_and_full_width_digits_are_read(tmp_path):
    qfile = _qdir(tmp_path) / "quarantine_20250115.csv"
    # Excel's "CSV UTF-8" starts with a BOM; an IME typed the value and time in full width.
    text = HEADER + "\r\n" + ROW.replace("1.5", "１２．５").replace("45.123456", "４５.１２３４５６") + "\r\n"
    qfile.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    r = _cmd(tmp_path, "write-back", str(qfile))
    _no_traceback(r)
    assert r.returncode == 0, r.stderr
    [back] = _backups(tmp_path)
    [(_, recs)] = B.read_chunk(str(back)).groups
    assert recs["value"].tolist() == [12.5]
    assert int(recs["ts_us"][0]) % 60_000_000 == 45_123_456
    assert not _leftovers(tmp_path)


def test_characters_that_stay_non_ascii_are_refused_with_a_line_and_nothing_left_behind(tmp_path):
    qfile = _qdir(tmp_path) / "quarantine_20250115.csv"
    qfile.write_text(HEADER + "\n" + ROW.replace("D100", "D１００é") + "\n", encoding="utf-8")
    r = _cmd(tmp_path, "write-back", str(qfile))
    _no_traceback(r)
    assert r.returncode == 6 and "line 2:" in r.stderr
    assert not _backups(tmp_path) and not _leftovers(tmp_path)
    assert qfile.exists()  # not moved to written-back


def test_a_missing_file_or_a_folder_is_one_line_and_exit_6(tmp_path):
    _qdir(tmp_path)
    for target in (tmp_path / "nope.csv", tmp_path / "backup"):
        r = _cmd(tmp_path, "write-back", str(target))
        _no_traceback(r)
        assert r.returncode == 6
        assert len(r.stderr.strip().splitlines()) == 1 and str(target) in r.stderr, r.stderr
    # The quarantine folder being a file: list says so in one line too.
    (tmp_path / "backup" / "quarantine").rmdir()
    (tmp_path / "backup" / "quarantine").write_text("")
    r = _cmd(tmp_path, "list")
    _no_traceback(r)
    assert r.returncode == 6 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not _leftovers(tmp_path)


def test_a_failed_write_back_leaves_no_temporary_file(tmp_path, monkeypatch):
    # Placing the file fails (EIO at the OS boundary, after the temporary was written):
    # the temporary must not stay behind, and nothing is moved to written-back.
    from pipeline.writer import quarantine as Q

    qfile = _qdir(tmp_path) / "quarantine_20250115.csv"
    qfile.write_text(HEADER + "\n" + ROW + "\n")
    target = tmp_path / "other"
    target.mkdir()

    def broken_link(src, dst):
        raise OSError(5, "Input/output error", dst)

    monkeypatch.setattr(Q.os, "link", broken_link)
    try:
        Q.write_back(str(qfile), str(target))
    except OSError:
        pass
    else:
        raise AssertionError("write_back hid the failed link")
    monkeypatch.undo()
    assert not list(target.glob(".writeback-*")) and not list(target.glob("backup_*"))
    assert qfile.exists()


def test_a_field_over_the_reading_limit_is_one_line_and_exit_6(tmp_path, monkeypatch, capsys):
    # The limit is 1 GiB; lowered here so the test stays small. Same path as a real one.
    import argparse

    from pipeline.writer import quarantine as Q

    qdir = _qdir(tmp_path)
    (qdir / "quarantine_20250115.csv").write_text(HEADER + "\n" + ROW + "x" * 100 + "\n")
    for k, v in child_env(BACKUP_FILE_PATH=str(tmp_path / "backup"), SQLITE_PATH=str(tmp_path / "data" / "t.db")).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(Q, "FIELD_LIMIT", 50)
    assert Q.run(argparse.Namespace(action="list")) == 6
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "field larger than field limit" in err, err
