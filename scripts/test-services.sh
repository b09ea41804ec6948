# Sourced by bootstrap.sh test: make sure PostgreSQL and MariaDB are installed, running and
# have a test user, and export the URLs the tests use. Idempotent.
#
# ZSTACK_TEST_DATABASES=sqlite skips both servers; ZSTACK_TEST_POSTGRESQL_URL and
# ZSTACK_TEST_MARIADB_URL point the tests at servers set up elsewhere.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  echo "$2 did not start listening on 127.0.0.1:$1" >&2
  return 1
}

wanted=${ZSTACK_TEST_DATABASES:-all}
want() { [ "$wanted" = all ] || [[ ",$wanted," == *",$1,"* ]]; }

if want postgresql && [ -z "${ZSTACK_TEST_POSTGRESQL_URL:-}" ]; then
  if ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql
  fi
  if ! port_open 5432; then
    echo "==> starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" \
      main start
    wait_port 5432 PostgreSQL
  fi
  as_root su postgres -c "psql -q -v ON_ERROR_STOP=1" >/dev/null <<'SQL'
SELECT 'CREATE ROLE zstack LOGIN PASSWORD ''zstack'''
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'zstack')\gexec
SELECT 'CREATE DATABASE zstack_test OWNER zstack'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'zstack_test')\gexec
SQL
  export ZSTACK_TEST_POSTGRESQL_URL=postgresql+psycopg://zstack:zstack@127.0.0.1:5432/zstack_test
fi

if want mariadb && [ -z "${ZSTACK_TEST_MARIADB_URL:-}" ]; then
  if [ ! -x /usr/sbin/mariadbd ]; then
    apt_install mariadb-server
  fi
  if ! port_open 3306; then
    echo "==> starting MariaDB"
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_port 3306 MariaDB
  fi
  as_root mariadb -u root <<'SQL'
CREATE USER IF NOT EXISTS 'zstack'@'127.0.0.1' IDENTIFIED BY 'zstack';
CREATE USER IF NOT EXISTS 'zstack'@'localhost' IDENTIFIED BY 'zstack';
GRANT ALL PRIVILEGES ON *.* TO 'zstack'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'zstack'@'localhost';
CREATE DATABASE IF NOT EXISTS zstack_test;
SQL
  # MySQL's C client when installed (the test extras of bootstrap.sh), else pymysql.
  driver=pymysql
  if .venv/bin/python -c 'import MySQLdb' 2>/dev/null; then driver=mysqldb; fi
  export ZSTACK_TEST_MARIADB_URL=mysql+$driver://zstack:zstack@127.0.0.1:3306/zstack_test
fi
