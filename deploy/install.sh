#!/usr/bin/env bash
# Install tagpipe as three systemd units and a target (run as root from the repository),
# or only render the unit files (--render-only DIR, no root needed; the tests use it).
#
#   sudo deploy/install.sh                     # defaults below, then starts tagpipe.target
#   sudo deploy/install.sh --no-start          # everything but enabling/starting
#   deploy/install.sh --render-only /tmp/units --python /path/to/python ...
#   sudo deploy/install.sh --instance line1 --web-port 8081   # one pipeline of several
#
# --instance NAME installs the template units (tagpipe-poller@.service, -writer@, -web@,
# tagpipe@.target) and one instance of them: settings in ENV_FILE's folder as NAME.env
# (RING_NAME=tagpipe-NAME, its own SQLite file, backup folder and web port), data in
# DATA_DIR/NAME, backups in BACKUP_DIR/NAME; started as tagpipe@NAME.target. It refuses
# (exit 2) settings that clash with another pipeline's file there (ring, port, paths).
#
# Steps (each also in docs/operations.md): system group and user, data and backup
# folders, a virtual environment with tagpipe installed, the environment file (settings,
# mode 0640 root:GROUP, because it holds the Oracle password), the rendered units in
# UNIT_DIR, daemon-reload, enable and start tagpipe.target.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
APP_DIR=/opt/tagpipe
DATA_DIR=/var/lib/tagpipe
BACKUP_DIR=""
ENV_FILE=/etc/tagpipe/tagpipe.env
USER_NAME=tagpipe
GROUP_NAME=tagpipe
PYTHON=""
UNIT_DIR=/etc/systemd/system
RENDER_ONLY=""
START=1
INSTANCE=""
WEB_PORT=8080

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; echo; echo "options: --app-dir --data-dir --backup-dir --env-file --user --group --python --unit-dir --render-only DIR --no-start --instance NAME --web-port PORT"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --app-dir) APP_DIR="$2"; shift 2 ;;
    --data-dir) DATA_DIR="$2"; shift 2 ;;
    --backup-dir) BACKUP_DIR="$2"; shift 2 ;;
    --env-file) ENV_FILE="$2"; shift 2 ;;
    --user) USER_NAME="$2"; shift 2 ;;
    --group) GROUP_NAME="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --unit-dir) UNIT_DIR="$2"; shift 2 ;;
    --render-only) RENDER_ONLY="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    --instance) INSTANCE="$2"; shift 2 ;;
    --web-port) WEB_PORT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
BACKUP_DIR="${BACKUP_DIR:-$DATA_DIR/backup}"
PYTHON="${PYTHON:-$APP_DIR/.venv/bin/python}"
ENV_DIR="$(dirname "$ENV_FILE")"

if [ -n "$INSTANCE" ]; then
  # The name becomes part of a ring name (A-Z a-z 0-9 _ -, at most 64 with "tagpipe-"),
  # of paths and of unit names (no systemd escaping needed for these characters).
  if ! [[ "$INSTANCE" =~ ^[A-Za-z0-9_-]{1,56}$ ]]; then
    echo "install.sh: --instance '$INSTANCE' must be 1-56 of A-Z a-z 0-9 _ -" >&2; exit 2
  fi
  # DATA_DIR/backup holds the backups of every instance; ENV_DIR/tagpipe.env is the single pipeline's.
  if [ "$INSTANCE" = backup ] || [ "$ENV_DIR/$INSTANCE.env" = "$ENV_FILE" ]; then
    echo "install.sh: --instance '$INSTANCE' is reserved (pick another name)" >&2; exit 2
  fi
  if ! [[ "$WEB_PORT" =~ ^[0-9]{1,5}$ ]] || [ "$WEB_PORT" -lt 1 ] || [ "$WEB_PORT" -gt 65535 ]; then
    echo "install.sh: --web-port '$WEB_PORT' must be a port number 1-65535" >&2; exit 2
  fi
fi

for p in "$APP_DIR" "$DATA_DIR" "$BACKUP_DIR" "$ENV_FILE" "$PYTHON"; do
  case "$p" in
    /*) ;;
    *) echo "install.sh: $p must be an absolute path" >&2; exit 2 ;;
  esac
  case "$p" in
    *[[:space:]\|\\]*) echo "install.sh: $p must not contain spaces, | or \\" >&2; exit 2 ;;
  esac
done

UNITS="tagpipe-poller.service tagpipe-writer.service tagpipe-web.service tagpipe.target"
if [ -n "$INSTANCE" ]; then
  UNITS="tagpipe-poller@.service tagpipe-writer@.service tagpipe-web@.service tagpipe@.target"
fi

render() {  # render DEST_DIR: the four unit files (or templates) with the placeholders filled in
  local dest="$1" f
  mkdir -p "$dest"
  for f in $UNITS; do
    sed -e "s|@APP_DIR@|$APP_DIR|g" -e "s|@DATA_DIR@|$DATA_DIR|g" -e "s|@BACKUP_DIR@|$BACKUP_DIR|g" \
        -e "s|@ENV_FILE@|$ENV_FILE|g" -e "s|@ENV_DIR@|$ENV_DIR|g" -e "s|@USER@|$USER_NAME|g" -e "s|@GROUP@|$GROUP_NAME|g" \
        -e "s|@PYTHON@|$PYTHON|g" "$SRC/deploy/systemd/$f" > "$dest/$f"
    chmod 0644 "$dest/$f"
  done
}

# What this run installs: the single pipeline, or one instance of the templates.
TARGET=tagpipe.target
SETTINGS_FILE="$ENV_FILE"
PIPE_DATA="$DATA_DIR"
PIPE_BACKUP="$BACKUP_DIR"
SERVICES="tagpipe-poller tagpipe-writer tagpipe-web"
if [ -n "$INSTANCE" ]; then
  TARGET="tagpipe@$INSTANCE.target"
  SETTINGS_FILE="$ENV_DIR/$INSTANCE.env"
  PIPE_DATA="$DATA_DIR/$INSTANCE"
  PIPE_BACKUP="$BACKUP_DIR/$INSTANCE"
  SERVICES="tagpipe-poller@$INSTANCE tagpipe-writer@$INSTANCE tagpipe-web@$INSTANCE"
fi

if [ -n "$RENDER_ONLY" ]; then
  render "$RENDER_ONLY"
  echo "rendered units into $RENDER_ONLY"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or use --render-only DIR)" >&2
  exit 1
fi

echo "1. system group and user $USER_NAME:$GROUP_NAME (a system user: logind's RemoveIPC never applies)"
getent group "$GROUP_NAME" >/dev/null || groupadd --system "$GROUP_NAME"
getent passwd "$USER_NAME" >/dev/null || useradd --system --gid "$GROUP_NAME" --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin "$USER_NAME"

echo "2. folders $PIPE_DATA and $PIPE_BACKUP (owned by $USER_NAME, mode 0750)"
install -d -o "$USER_NAME" -g "$GROUP_NAME" -m 0750 "$DATA_DIR" "$BACKUP_DIR" "$PIPE_DATA" "$PIPE_BACKUP"

echo "3. virtual environment in $APP_DIR/.venv with tagpipe from $SRC"
install -d -m 0755 "$APP_DIR"
if [ "$PYTHON" = "$APP_DIR/.venv/bin/python" ]; then
  [ -x "$PYTHON" ] || python3 -m venv "$APP_DIR/.venv"
  "$PYTHON" -m pip install --quiet --upgrade "pip>=23"
  "$PYTHON" -m pip install --quiet "$SRC"
fi
install -m 0644 "$SRC/README.md" "$APP_DIR/README.md"
install -d -m 0755 "$APP_DIR/docs"
install -m 0644 "$SRC"/docs/*.md "$APP_DIR/docs/"

echo "4. settings in $SETTINGS_FILE (kept if it exists; mode 0640 root:$GROUP_NAME)"
install -d -m 0755 "$ENV_DIR"
CREATED=0
if [ ! -e "$SETTINGS_FILE" ]; then
  CREATED=1
  if [ -n "$INSTANCE" ]; then
    sed -e "s|^# *RING_NAME=.*|RING_NAME=tagpipe-$INSTANCE|" -e "s|^# *WEB_PORT=.*|WEB_PORT=$WEB_PORT|" \
        -e "s|^# *SQLITE_PATH=.*|SQLITE_PATH=$PIPE_DATA/tagpipe.db|" \
        -e "s|^# *BACKUP_FILE_PATH=.*|BACKUP_FILE_PATH=$PIPE_BACKUP|" "$SRC/.env.example" > "$SETTINGS_FILE"
  else
    sed -e "s|^# *SQLITE_PATH=.*|SQLITE_PATH=$PIPE_DATA/tagpipe.db|" \
        -e "s|^# *BACKUP_FILE_PATH=.*|BACKUP_FILE_PATH=$PIPE_BACKUP|" "$SRC/.env.example" > "$SETTINGS_FILE"
  fi
fi
chown "root:$GROUP_NAME" "$SETTINGS_FILE"
chmod 0640 "$SETTINGS_FILE"
# Check the settings now, so a mistake shows here rather than as units exiting 2; and
# against every other pipeline's file in the same folder: two pipelines on one ring,
# port, database file or backup folder would fight (role taken, port in use) or mix data.
# A file written by this run and refused is removed, so the next run (another
# --web-port, say) writes it afresh; a file that was there already is the admin's.
check=0
"$PYTHON" - "$SETTINGS_FILE" <<'PY' || check=$?
import sys
from pathlib import Path
from pipeline.common.errors import ConfigError
from pipeline.common.settings import SETTINGS, load_settings
mine = Path(sys.argv[1])
try:
    s = load_settings(env={}, env_file=str(mine))
    s = {x.name: getattr(s, x.attr) for x in SETTINGS}
except ConfigError as e:
    print(f"install.sh: {mine}: {e}", file=sys.stderr)
    sys.exit(2)
for other in sorted(mine.parent.glob("*.env")):
    if other == mine:
        continue
    try:
        o = load_settings(env={}, env_file=str(other))
        o = {x.name: getattr(o, x.attr) for x in SETTINGS}
    except (ConfigError, OSError):
        continue  # that pipeline's own install or units report it
    for name in ("RING_NAME", "WEB_PORT", "SQLITE_PATH", "BACKUP_FILE_PATH"):
        # Relative paths resolve in each pipeline's own folder; one Oracle table for many
        # pipelines is the plan (docs/fleet.md), so SQLITE_PATH only counts without Oracle.
        if name != "RING_NAME" and name != "WEB_PORT" and not str(s[name]).startswith("/"):
            continue
        if name == "SQLITE_PATH" and (s["ORACLE_HOST"] or s["ORACLE_DSN"]):
            continue
        if str(s[name]) == str(o[name]):
            print(f"install.sh: {mine}: {name}={s[name]!r} is also {other}'s: give each pipeline its own", file=sys.stderr)
            sys.exit(2)
PY
if [ "$check" != 0 ]; then
  [ "$CREATED" = 1 ] && rm -f "$SETTINGS_FILE"
  exit "$check"
fi

echo "5. unit files into $UNIT_DIR"
render "$UNIT_DIR"
if [ ! -d /run/systemd/system ]; then
  echo "systemd is not running here: run 'systemctl daemon-reload && systemctl enable --now $TARGET' on the target system"
  exit 0
fi
systemctl daemon-reload

if [ "$START" = 1 ]; then
  echo "6. enable and start $TARGET"
  systemctl enable --now "$TARGET"
  # shellcheck disable=SC2086  # SERVICES is a list of unit names
  systemctl --no-pager status "$TARGET" $SERVICES || true
else
  echo "6. skipped (--no-start): systemctl enable --now $TARGET"
fi
