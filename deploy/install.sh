#!/usr/bin/env bash
# Install tagpipe as three systemd units and a target (run as root from the repository),
# or only render the unit files (--render-only DIR, no root needed; the tests use it).
#
#   sudo deploy/install.sh                     # defaults below, then starts tagpipe.target
#   sudo deploy/install.sh --no-start          # everything but enabling/starting
#   deploy/install.sh --render-only /tmp/units --python /path/to/python ...
#
# Steps (each also in README "operations"): system group and user, data and backup
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

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; echo; echo "options: --app-dir --data-dir --backup-dir --env-file --user --group --python --unit-dir --render-only DIR --no-start"; }

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
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
BACKUP_DIR="${BACKUP_DIR:-$DATA_DIR/backup}"
PYTHON="${PYTHON:-$APP_DIR/.venv/bin/python}"

for p in "$APP_DIR" "$DATA_DIR" "$BACKUP_DIR" "$ENV_FILE" "$PYTHON"; do
  case "$p" in
    /*) ;;
    *) echo "install.sh: $p must be an absolute path" >&2; exit 2 ;;
  esac
  case "$p" in
    *[[:space:]\|\\]*) echo "install.sh: $p must not contain spaces, | or \\" >&2; exit 2 ;;
  esac
done

render() {  # render DEST_DIR: the four unit files with the placeholders filled in
  local dest="$1" f
  mkdir -p "$dest"
  for f in tagpipe-poller.service tagpipe-writer.service tagpipe-web.service tagpipe.target; do
    sed -e "s|@APP_DIR@|$APP_DIR|g" -e "s|@DATA_DIR@|$DATA_DIR|g" -e "s|@BACKUP_DIR@|$BACKUP_DIR|g" \
        -e "s|@ENV_FILE@|$ENV_FILE|g" -e "s|@USER@|$USER_NAME|g" -e "s|@GROUP@|$GROUP_NAME|g" \
        -e "s|@PYTHON@|$PYTHON|g" "$SRC/deploy/systemd/$f" > "$dest/$f"
    chmod 0644 "$dest/$f"
  done
}

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

echo "2. folders $DATA_DIR and $BACKUP_DIR (owned by $USER_NAME, mode 0750)"
install -d -o "$USER_NAME" -g "$GROUP_NAME" -m 0750 "$DATA_DIR" "$BACKUP_DIR"

echo "3. virtual environment in $APP_DIR/.venv with tagpipe from $SRC"
install -d -m 0755 "$APP_DIR"
if [ "$PYTHON" = "$APP_DIR/.venv/bin/python" ]; then
  [ -x "$PYTHON" ] || python3 -m venv "$APP_DIR/.venv"
  "$PYTHON" -m pip install --quiet --upgrade "pip>=23"
  "$PYTHON" -m pip install --quiet "$SRC"
fi
install -m 0644 "$SRC/README.md" "$APP_DIR/README.md"

echo "4. settings in $ENV_FILE (kept if it exists; mode 0640 root:$GROUP_NAME)"
install -d -m 0755 "$(dirname "$ENV_FILE")"
if [ ! -e "$ENV_FILE" ]; then
  sed -e "s|^# *SQLITE_PATH=.*|SQLITE_PATH=$DATA_DIR/tagpipe.db|" \
      -e "s|^# *BACKUP_FILE_PATH=.*|BACKUP_FILE_PATH=$BACKUP_DIR|" "$SRC/.env.example" > "$ENV_FILE"
fi
chown "root:$GROUP_NAME" "$ENV_FILE"
chmod 0640 "$ENV_FILE"
# Check the settings now, so a mistake shows here rather than as units exiting 2.
"$PYTHON" - "$ENV_FILE" <<'PY'
import sys
from pipeline.common.errors import ConfigError
from pipeline.common.settings import load_settings
try:
    load_settings(env={}, env_file=sys.argv[1])
except ConfigError as e:
    sys.exit(f"install.sh: {sys.argv[1]}: {e}")
PY

echo "5. unit files into $UNIT_DIR"
render "$UNIT_DIR"
if [ ! -d /run/systemd/system ]; then
  echo "systemd is not running here: run 'systemctl daemon-reload && systemctl enable --now tagpipe.target' on the target system"
  exit 0
fi
systemctl daemon-reload

if [ "$START" = 1 ]; then
  echo "6. enable and start tagpipe.target"
  systemctl enable --now tagpipe.target
  systemctl --no-pager status tagpipe.target tagpipe-poller tagpipe-writer tagpipe-web || true
else
  echo "6. skipped (--no-start): systemctl enable --now tagpipe.target"
fi
