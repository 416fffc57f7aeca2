# scripts/roots.sh - sourced by scripts/test.sh for --matrix and --pg N:
# Debian roots with one PostgreSQL version each, under ./tmp/roots/pgNN,
# built with mmdebstrap, and a way to run scripts/test.sh inside one with the
# repository bind-mounted at its own path.  Needs root (mmdebstrap, mount,
# chroot).  Every mount made here is undone on exit (root_unmount_all, from
# scripts/test.sh's EXIT trap), also when a test or the build fails.

ROOTS_DIR="$ROOT/tmp/roots"
ROOT_MOUNTS=()   # mount points made by root_mount, unmounted in reverse order

# root_suite VERSION: the Debian suite whose archive carries PostgreSQL VERSION.
root_suite() {
	case $1 in
		15) echo bookworm ;;
		17) echo trixie ;;
		18) echo forky ;;
		*) return 1 ;;
	esac
}

# mounted PATH: is PATH a mount point (by /proc/self/mounts, no util-linux needed)?
mounted() {
	local p; p=$(realpath -m "$1")
	awk -v p="$p" '$2 == p { found = 1 } END { exit !found }' /proc/self/mounts
}

# mounts_under DIR: is anything mounted at or below DIR?
mounts_under() {
	local d; d=$(realpath -m "$1")
	awk -v d="$d" '$2 == d || index($2, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mounts
}

# root_ensure VERSION: make ./tmp/roots/pgVERSION unless a complete one is
# there (a finished root has .apikeys-root; a half-made one is pgNN.new and
# is made again).  Prints nothing on success but progress lines.
root_ensure() {
	local v=$1 dir="$ROOTS_DIR/pg$1" suite
	suite=$(root_suite "$v") || { echo "no Debian suite known for PostgreSQL $v (known: 15, 17, 18)" >&2; return 1; }
	if [ -f "$dir/.apikeys-root" ] && [ -x "$dir/usr/lib/postgresql/$v/bin/postgres" ]; then
		say "pg$v: reusing the root $dir"
		return 0
	fi
	if ! command -v mmdebstrap >/dev/null; then
		say "installing mmdebstrap"
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap; } >/dev/null ||
			{ echo "could not install mmdebstrap" >&2; return 1; }
	fi
	mkdir -p "$ROOTS_DIR"
	for d in "$dir.new" "$dir"; do
		[ -e "$d" ] || continue
		if mounts_under "$d"; then
			echo "$d has something mounted in it; unmount it first (grep '$d' /proc/mounts)" >&2
			return 1
		fi
		rm -rf --one-file-system "$d"
	done
	say "pg$v: building a Debian $suite root in $dir with mmdebstrap (a few minutes; log: $dir.log)"
	# Check-Valid-Until off: testing suites' Release files may be stale on a mirror
	if ! mmdebstrap --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
			--include="postgresql-$v,postgresql-server-dev-$v,postgresql-contrib-$v,gcc,make,libc6-dev,procps,pgbouncer,prometheus-postgres-exporter,postgresql-$v-cron,curl" \
			"$suite" "$dir.new" >"$dir.log" 2>&1; then
		echo "mmdebstrap failed; the end of $dir.log:" >&2
		tail -n 15 "$dir.log" >&2
		return 1
	fi
	touch "$dir.new/.apikeys-root"
	mv "$dir.new" "$dir"
}

# root_mount VERSION: /proc, /dev and the repository (at its own path) inside
# the root; each mount is recorded for root_unmount_all.
root_mount() {
	local dir="$ROOTS_DIR/pg$1"
	if ! mounted "$dir/proc"; then
		mount -t proc proc "$dir/proc" || return 1
		ROOT_MOUNTS+=("$dir/proc")
	fi
	if ! mounted "$dir/dev"; then
		mount --rbind /dev "$dir/dev" || return 1
		ROOT_MOUNTS+=("$dir/dev")
		# unmounting the copy must never unmount the host's /dev/pts, /dev/shm...
		mount --make-rslave "$dir/dev" || return 1
	fi
	mkdir -p "$dir$ROOT"
	if ! mounted "$dir$ROOT"; then
		mount --bind "$ROOT" "$dir$ROOT" || return 1
		ROOT_MOUNTS+=("$dir$ROOT")
	fi
}

# root_unmount_all: undo every mount root_mount made, newest first.  A mount
# still busy (a server of a killed test shutting down) is retried, then
# detached lazily so that nothing stays visible under ./tmp/roots.
root_unmount_all() {
	local i m
	for ((i = ${#ROOT_MOUNTS[@]} - 1; i >= 0; i--)); do
		m=${ROOT_MOUNTS[i]}
		for _ in 1 2 3 4 5; do
			mounted "$m" || break
			umount -R "$m" 2>/dev/null || sleep 1
		done
		if mounted "$m"; then
			umount -R -l "$m" || echo "could not unmount $m" >&2
		fi
	done
	ROOT_MOUNTS=()
}

# root_run VERSION ARGS...: scripts/test.sh ARGS inside the root, for that
# version, with its state under ./tmp/pgVERSION (each root has its own
# server user id, so its files must not mix with another version's).
root_run() {
	local v=$1; shift
	chroot "$ROOTS_DIR/pg$v" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		PGVER="$v" APIKEYS_TMP="$ROOT/tmp/pg$v" ${FUZZ_SECONDS:+FUZZ_SECONDS="$FUZZ_SECONDS"} \
		bash -c 'cd "$1" && shift && exec scripts/test.sh "$@"' test.sh "$ROOT" "$@"
}
