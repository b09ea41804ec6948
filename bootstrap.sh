#!/usr/bin/env bash
# Set up this checkout on a Debian machine, then start a management node or run the tests.
#
#   ./bootstrap.sh start   install, then start a node on http://127.0.0.1:8080 (SQLite,
#                          in-process bus); stop it with .venv/bin/zstack-ctl stop
#   ./bootstrap.sh test    install, make sure PostgreSQL and MariaDB run, then run every test
#                          (database tests on SQLite, PostgreSQL and MariaDB)
#
# Extra arguments go to zstack-ctl start or to pytest. Run as root, or with sudo available,
# when system packages are missing.
set -euo pipefail
cd "$(dirname "$0")"

action=${1:-}
[ $# -gt 0 ] && shift
case "$action" in
  start|test) ;;
  *) echo "usage: $0 start|test [arguments for zstack-ctl start or pytest]" >&2; exit 2 ;;
esac

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    echo "==> apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  echo "==> apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Python 3.11 or newer, with venv and pip.
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null || \
   ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  apt_install python3
  python=python3
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  apt_install python3-venv python3-pip
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi
extras=postgresql,mysql
if [ "$action" = test ]; then
  extras=$extras,test,bench,mysqlclient
  # libvirt-python and mysqlclient build against libvirt's and MySQL's client headers; the
  # KVM agent makes disks with qemu-img.
  if ! pkg-config --exists libvirt mysqlclient 2>/dev/null || ! command -v qemu-img >/dev/null
  then
    apt_install pkg-config libvirt-dev default-libmysqlclient-dev qemu-utils
  fi
fi
echo "==> installing the project into .venv ($extras)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" \
  2> >(grep -v '^WARNING: Location' >&2)

if [ "$action" = start ]; then
  exec .venv/bin/zstack-ctl start "$@"
fi

# The example third-party plugins are installed as their own distributions and tested with the rest.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
  -e examples/hello-plugin -e examples/zone-labels \
  2> >(grep -v '^WARNING: Location' >&2)

. scripts/test-services.sh
echo "==> running the tests"
# ZStack's SDKs and the ctl scripts must find the project's own commands first.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest --db "${ZSTACK_TEST_DATABASES:-all}" "$@"
