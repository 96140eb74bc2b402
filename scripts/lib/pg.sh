# Sourced by scripts/test and scripts/bench: PostgreSQL on a fresh Debian machine.
#
#   pg_install                 installs PostgreSQL with apt-get when no server binaries exist
#   pg_throwaway [-c opt=v]... starts a cluster in a temporary folder on a free port, removed
#                              when the calling script exits; sets PG_URL (database postgres),
#                              PG_PORT and PGBIN. Durability is PostgreSQL's default: fsync on,
#                              synchronous_commit on, full_page_writes on.

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

pg_sudo() { if [ "$(id -u)" -ne 0 ]; then sudo "$@"; else "$@"; fi; }

pg_install() {
  [ -n "$(pg_bin)" ] && return 0
  echo "$(basename "$0"): installing postgresql with apt-get" >&2
  pg_sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive pg_sudo apt-get install -y -qq postgresql >/dev/null
}

pg_throwaway() {
  PGBIN="$(pg_bin)"
  PGTMP="$(mktemp -d)"
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  # initdb refuses to run as root: use the postgres user then.
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PGTMP"
    as_pg=(runuser -u postgres --)
  fi
  "${as_pg[@]}" "$PGBIN/initdb" -D "$PGTMP/data" -U postgres --auth=trust -E UTF8 >/dev/null
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/log" -w \
    -o "-p $port -k $PGTMP -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200 $*" \
    start >/dev/null
  trap pg_throwaway_stop EXIT
  PG_PORT="$port"
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "$(basename "$0"): throwaway PostgreSQL on port $port" >&2
}

pg_throwaway_stop() {
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGTMP/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGTMP"
}
