# scripts/lib.sh - shared by scripts/demo.sh and scripts/test.sh.
# Installs what is missing, builds, and runs throwaway clusters as an
# unprivileged user (initdb and pg_ctl refuse root) under ./tmp.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGVER=${PGVER:-15}
PGBIN=/usr/lib/postgresql/$PGVER/bin
# APIKEYS_TMP: another state directory (scripts/test.sh --matrix gives each
# PostgreSQL version its own, as each root has its own server user).
TMPDIR_APIKEYS=${APIKEYS_TMP:-$ROOT/tmp}
# The user the servers run as: the invoking user unless that is root.
if [ "$(id -u)" = 0 ]; then PGUSER_OS=postgres; else PGUSER_OS=$(id -un); fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi
}

ensure_deps() {
	local missing=()
	[ -x "$PGBIN/postgres" ] || missing+=("postgresql-$PGVER" "postgresql-contrib-$PGVER")
	# pgxs.mk ships with the client package; the server headers are what
	# postgresql-server-dev-N alone brings.
	[ -f "/usr/include/postgresql/$PGVER/server/postgres.h" ] || missing+=("postgresql-server-dev-$PGVER")
	command -v make >/dev/null || missing+=(make)
	command -v gcc >/dev/null || missing+=(gcc)
	if [ ${#missing[@]} -gt 0 ]; then
		say "installing ${missing[*]}"
		if [ "$(id -u)" != 0 ]; then
			echo "run as root (or with sudo) to install: ${missing[*]}" >&2; exit 1
		fi
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
}

build_install() {
	local stamp="$ROOT/tmp/built-for" version
	say "building and installing apikeys"
	# Objects built for another PostgreSQL version (scripts/test.sh --matrix
	# builds the same tree for several) must not be reused.
	version=$("$PGBIN/pg_config" --version)
	if [ "$(cat "$stamp" 2>/dev/null)" != "$version" ]; then
		make -C "$ROOT" -s PG_CONFIG="$PGBIN/pg_config" clean >/dev/null
		mkdir -p "$ROOT/tmp"
		echo "$version" >"$stamp"
	fi
	make -C "$ROOT" -s PG_CONFIG="$PGBIN/pg_config" >/dev/null
	make -C "$ROOT" -s PG_CONFIG="$PGBIN/pg_config" install >/dev/null
}

prepare_tmp() {
	mkdir -p "$TMPDIR_APIKEYS"
	chown "$PGUSER_OS" "$TMPDIR_APIKEYS" 2>/dev/null || true
	# the server user must be able to reach ./tmp
	chmod o+x "$ROOT" 2>/dev/null || true
}

# cluster_start NAME PORT [extra postgresql.conf lines...]
cluster_start() {
	local name=$1 port=$2; shift 2
	local dir="$TMPDIR_APIKEYS/$name"
	prepare_tmp
	cluster_stop "$name" 2>/dev/null || true
	rm -rf "$dir"
	as_pg mkdir -p "$dir"
	as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
	{
		echo "port = $port"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "fsync = off"
		for line in "$@"; do echo "$line"; done
	} | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
	as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

cluster_stop() {
	local dir="$TMPDIR_APIKEYS/$1"
	[ -f "$dir/data/postmaster.pid" ] || return 0
	as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
}

# cluster_psql NAME PORT [psql args...]
cluster_psql() {
	local name=$1 port=$2; shift 2
	"$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h "$TMPDIR_APIKEYS/$name" -p "$port" -U postgres "$@"
}
