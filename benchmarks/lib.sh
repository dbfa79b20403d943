# Shell helpers shared by the benchmark scripts (sourced, not run).
# Callers set $work (a scratch directory) before using them.

# The PostgreSQL server binaries: pg_config, else the newest Debian install.
find_bindir() {
  bindir=$(pg_config --bindir 2>/dev/null || true)
  [ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$bindir/initdb" ] || { echo "$0: PostgreSQL server binaries not found" >&2; exit 1; }
}

# Runs a command as `postgres` when we are root (PostgreSQL refuses root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Creates a scratch directory the postgres user can use.
make_work() {
  work=$(mktemp -d /tmp/ferry-bench.XXXXXX)
  chmod 755 "$work"
  [ "$(id -u)" = 0 ] && chown postgres: "$work"
  return 0
}

# start_node NAME PORT: initdb and start a server in $work/NAME, with the
# settings every benchmark uses (defaults otherwise, fsync on).
start_node() {
  local n=$1 port=$2
  as_pg "$bindir/initdb" -D "$work/$n" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  cat >> "$work/$n/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
max_connections = 200
shared_buffers = 256MB
max_wal_size = 4GB
CONF
  as_pg "$bindir/pg_ctl" -D "$work/$n" -l "$work/$n.log" -w start >/dev/null
  app_role "$port"
}

# app_role PORT: the ordinary role `app` (password `secret`) that Ferry's
# `[[users]] name = "app"` sessions run as, with every right on what the
# benchmarks' set-up creates as postgres: default privileges and the public
# schema's rights are set in template1, which every new database copies.
app_role() {
  psql_at "$1" template1 -c "CREATE ROLE app LOGIN PASSWORD 'secret';
    GRANT ALL ON SCHEMA public TO app;
    ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON TABLES TO app;
    ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON SEQUENCES TO app;
    ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON FUNCTIONS TO app" >/dev/null
}

# stop_nodes NAME...: fast shutdown of the servers that run.
stop_nodes() {
  for n in "$@"; do
    [ -f "$work/$n/postmaster.pid" ] && as_pg "$bindir/pg_ctl" -D "$work/$n" -m fast -w stop >/dev/null 2>&1
  done
  return 0
}

# psql_at PORT DB ARGS...: psql over the Unix socket in $work.
psql_at() { local port=$1 db=$2; shift 2; "$bindir/psql" -X -q -At -h "$work" -p "$port" -U postgres -d "$db" "$@"; }

# median: the median of numbers on standard input, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# need_gnuplot: installs gnuplot-nox when missing and we are root; otherwise
# says that the plots will be skipped (the tables are written either way).
need_gnuplot() {
  command -v gnuplot >/dev/null && return 0
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
  else
    echo "$0: install gnuplot-nox for the plots" >&2
  fi
}
