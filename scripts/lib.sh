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
	ensure_tool_deps
}

# The tools the shell tests run around the server (test/t/pgbouncer_*.sh,
# postgres_exporter.sh, pg_cron_recipes.sh): installed when missing and the
# archive has them.  A package the archive lacks for this PostgreSQL version
# (TOOL_PACKAGES_ABSENT) is left out; the test that needs it says so and skips.
TOOL_PACKAGES_ABSENT=()
ensure_tool_deps() {
	local want=() p
	[ -x /usr/sbin/pgbouncer ] || want+=(pgbouncer)
	[ -x /usr/bin/prometheus-postgres-exporter ] || want+=(prometheus-postgres-exporter)
	[ -f "/usr/lib/postgresql/$PGVER/lib/pg_cron.so" ] || want+=("postgresql-$PGVER-cron")
	command -v curl >/dev/null || want+=(curl)
	[ ${#want[@]} -gt 0 ] || return 0
	if [ "$(id -u)" != 0 ]; then
		say "not root: not installing ${want[*]} (the tests that need them skip)"; return 0
	fi
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
	local have=()
	for p in "${want[@]}"; do
		if [ -n "$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '(none)')" ]; then
			have+=("$p")
		else
			TOOL_PACKAGES_ABSENT+=("$p")
			say "the archive has no $p: the tests that need it skip"
		fi
	done
	[ ${#have[@]} -gt 0 ] || return 0
	say "installing ${have[*]}"
	# the packages' own services (pgbouncer on 6432, the exporter on 9187)
	# must not start: the tests run their own on private ports.  A
	# policy-rc.d of our own forbids it for this install only.
	local policy=/usr/sbin/policy-rc.d made_policy=0
	if [ ! -e $policy ]; then
		printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && made_policy=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${have[@]}" >/dev/null ||
		say "could not install ${have[*]}"
	[ $made_policy = 0 ] || rm -f $policy
	return 0
}

# skip REASON: a test that cannot run here says why and exits 0 (scripts/test.sh
# shows the reason); only for a tool the archive does not have.
skip() { echo "SKIP: $*"; exit 0; }

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
