#!/usr/bin/env bash
# scripts/test.sh - build apikeys with -Werror, install it, and run every test:
#
#   regress     pg_regress over sql/*.sql against expected/*.out
#   isolation   pg_isolation_regress over test/isolation/specs/*.spec
#   shell       test/t/*.sh (each starts and stops its own cluster; exit 0 = pass)
#   fuzz        libFuzzer target test/fuzz/fuzz_key_format.c for ~20 seconds
#
# Usage: scripts/test.sh [--matrix | --pg N | --here] [--valgrind] [regress|isolation|shell|fuzz ...]
#   --matrix    PostgreSQL 15 on this machine, then 17 and 18 each inside a
#               Debian root under ./tmp/roots/pgNN (built with mmdebstrap the
#               first time, then reused) with the repository bind-mounted;
#               test names get the version in front (pg17/regress/core_create)
#               and one "N passed, N failed" line covers all of it.  As root.
#               The default when run as root.
#   --pg N      PostgreSQL N (15, 17 or 18) alone, inside its root, likewise.
#   --here      only the PostgreSQL installed on this machine (PGVER, default
#               15): the default when not root, or with --valgrind or PGVER set.
#   --valgrind  run the pg_regress server under valgrind (slow) and count a
#               "valgrind" test that fails on any memcheck error.
#   With component names, run only those.  Default: all of them.
#   APIKEYS_SKIP_BUILD=1 tests the installed extension without building.
#
# Prints one "ok"/"FAILED" line per test and ends with "N passed, N failed";
# exits non-zero if anything failed.  All state goes under ./tmp (a root's
# under ./tmp/pgNN); every server is a temporary one that is stopped on exit.
GIVEN_PGVER=${PGVER:-}   # before lib.sh sets the default
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e   # a failing test must not end the run; each step checks its own status
set -u -o pipefail

PGXS_DIR=/usr/lib/postgresql/$PGVER/lib/pgxs
PG_REGRESS=$PGXS_DIR/src/test/regress/pg_regress
PG_ISOLATION_REGRESS=$PGXS_DIR/src/test/isolation/pg_isolation_regress
REGRESS_PORT=54392
ISOLATION_PORT=54393
VALGRIND_PORT=54395
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

VALGRIND=0
COMPONENTS=()
MATRIX=0
HERE=0
ONLY_PG=
PASS_ARGS=(--here)   # what a run for one version gets (--matrix, --pg)
while [ $# -gt 0 ]; do
	arg=$1; shift
	case $arg in
		--valgrind) VALGRIND=1; PASS_ARGS+=("$arg") ;;
		--matrix) MATRIX=1 ;;
		--here) HERE=1 ;;
		--pg) [ $# -gt 0 ] || { echo "--pg needs a version" >&2; exit 2; }; ONLY_PG=$1; shift ;;
		--pg=*) ONLY_PG=${arg#--pg=} ;;
		regress|isolation|shell|fuzz) COMPONENTS+=("$arg"); PASS_ARGS+=("$arg") ;;
		-h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
		*) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
	esac
done
if [ $((MATRIX + HERE + (${#ONLY_PG} > 0))) -gt 1 ]; then
	echo "--matrix, --pg and --here exclude each other" >&2; exit 2
fi
# the whole matrix unless asked for one version, or unable to build roots
if [ $HERE = 0 ] && [ -z "$ONLY_PG" ] && [ $MATRIX = 0 ] && [ "$(id -u)" = 0 ] &&
	[ $VALGRIND = 0 ] && [ -z "$GIVEN_PGVER" ] && [ "${APIKEYS_SKIP_BUILD:-}" != 1 ]; then
	MATRIX=1
fi
[ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=(regress isolation shell fuzz)
want() { local c; for c in "${COMPONENTS[@]}"; do [ "$c" = "$1" ] && return 0; done; return 1; }

PASSED=0
FAILED=0
FAILED_NAMES=()
pass() { printf 'ok      %s\n' "$1"; PASSED=$((PASSED + 1)); }
fail() {
	printf '\033[31mFAILED\033[0m  %s%s\n' "$1" "${2:+  ($2)}"
	FAILED=$((FAILED + 1)); FAILED_NAMES+=("$1")
}
finish() {
	echo
	[ $FAILED -eq 0 ] || echo "failed: ${FAILED_NAMES[*]}"
	echo "$PASSED passed, $FAILED failed"
	[ $FAILED -eq 0 ]
	exit $?
}

# pg_regress makes its socket directory in /tmp unless told otherwise; keep
# it under ./tmp when the path fits in a unix socket name (107 bytes).
sockdir_for() {
	local d=$1/sock
	if [ $(( ${#d} + 20 )) -lt 100 ]; then
		as_pg mkdir -p "$d" && chmod 700 "$d" 2>/dev/null
		echo "$d"
	fi
}

# run_regress_driver LABEL DRIVER OUTDIR PORT INPUTDIR BINDIR EXTRA_OPTS... -- NAMES...
# Runs the driver as the server user, prints ok/FAILED per test from its output.
run_regress_driver() {
	local label=$1 driver=$2 outdir=$3 port=$4 inputdir=$5 bindir=$6; shift 6
	local opts=() names=() sock line name verdict rc
	while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
	shift
	names=("$@")

	rm -rf "$outdir"
	as_pg mkdir -p "$outdir"
	sock=$(sockdir_for "$outdir")
	say "$label: ${#names[@]} test(s)"
	as_pg env ${sock:+PG_REGRESS_SOCK_DIR="$sock"} PGCTLTIMEOUT="${PGCTLTIMEOUT:-120}" \
		"$driver" --inputdir="$inputdir" --outputdir="$outdir" \
		--temp-instance="$outdir/instance" --temp-config="$ROOT/test/regress.conf" \
		--port="$port" --bindir="$bindir" "${opts[@]}" "${names[@]}" \
		>"$outdir/driver.log" 2>&1
	rc=$?

	local -A seen=()
	while IFS= read -r line; do
		# PostgreSQL 15: "test name ... ok  12 ms", "     name ... FAILED",
		# "name ... failed (ignored)"
		if [[ $line =~ ^(test[[:space:]]+|[[:space:]]+)?([A-Za-z0-9_.-]+)[[:space:]]+\.\.\.[[:space:]]+(ok|FAILED|failed) ]]; then
			name=${BASH_REMATCH[2]} verdict=${BASH_REMATCH[3]}
		# PostgreSQL 16+ (TAP): "ok 17   - name   12 ms", "not ok 19   + name   9 ms"
		# ("+" marks a test of a parallel group)
		elif [[ $line =~ ^(not[[:space:]]+)?ok[[:space:]]+[0-9]+[[:space:]]+[-+][[:space:]]+([A-Za-z0-9_.-]+)([[:space:]]|$) ]]; then
			name=${BASH_REMATCH[2]}
			if [ -n "${BASH_REMATCH[1]}" ]; then verdict=FAILED; else verdict=ok; fi
		else
			continue
		fi
		seen[$name]=1
		if [ "$verdict" = ok ]; then pass "$label/$name"; else fail "$label/$name"; fi
	done <"$outdir/driver.log"
	for name in "${names[@]}"; do
		[ -n "${seen[$name]:-}" ] || fail "$label/$name" "no result: $label driver exited with status $rc"
	done
	if [ $rc -ne 0 ]; then
		echo "---- $outdir/driver.log (tail)"
		tail -n 15 "$outdir/driver.log"
		if [ -s "$outdir/regression.diffs" ]; then
			echo "---- $outdir/regression.diffs (head)"
			head -n 80 "$outdir/regression.diffs"
		fi
		[ -f "$outdir/log/postmaster.log" ] && grep -E 'TRAP|PANIC|terminated by signal' "$outdir/log/postmaster.log" | head -n 5
		echo "----"
	fi
	return $rc
}

# tests_with_expected DIR_OF_INPUTS EXT EXPECTED_DIR LABEL: names with an
# expected file; the others fail here (pg_regress aborts the whole run on a
# missing expected file).
tests_with_expected() {
	local indir=$1 ext=$2 expdir=$3 label=$4 f name
	TESTS=()
	while IFS= read -r f; do
		name=$(basename "$f" ".$ext")
		if [ -f "$expdir/$name.out" ]; then TESTS+=("$name")
		else fail "$label/$name" "no $expdir/$name.out"; fi
	done < <(find "$indir" -maxdepth 1 -name "*.$ext" 2>/dev/null | LC_ALL=C sort)
}

# A bindir whose "postgres" runs the real one under valgrind; everything else
# (initdb, pg_ctl, psql) is the real program.
make_valgrind_bindir() {
	local dir=$1 logdir=$2 supp=() f
	as_pg mkdir -p "$dir" "$logdir"
	for f in "$PGBIN"/*; do
		[ "$(basename "$f")" = postgres ] || as_pg ln -sf "$f" "$dir/"
	done
	supp+=(--suppressions="$ROOT/test/valgrind.supp")
	for f in "${PG_VALGRIND_SUPP:-}" /usr/share/postgresql/$PGVER/valgrind.supp ; do
		[ -n "$f" ] && [ -f "$f" ] && supp+=(--suppressions="$f")
	done
	as_pg tee "$dir/postgres" >/dev/null <<-EOF
	#!/bin/sh
	exec valgrind --quiet --tool=memcheck --leak-check=no --trace-children=yes \\
	    --track-origins=yes --read-var-info=no --num-callers=30 \\
	    --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \\
	    --gen-suppressions=all ${supp[*]} \\
	    --log-file=$logdir/%p.log "$PGBIN/postgres" "\$@"
	EOF
	as_pg chmod +x "$dir/postgres"
}

# Count memcheck errors in the per-process valgrind logs.
check_valgrind_logs() {
	local logdir=$1 n files
	files=$(grep -l 'VALGRINDERROR-BEGIN' "$logdir"/*.log 2>/dev/null)
	n=$(cat "$logdir"/*.log 2>/dev/null | grep -c 'VALGRINDERROR-BEGIN')
	local procs; procs=$(ls "$logdir"/*.log 2>/dev/null | wc -l)
	if [ "$n" -eq 0 ]; then
		pass "valgrind ($procs server processes, 0 errors)"
	else
		fail "valgrind" "$n memcheck error(s) in $(echo "$files" | wc -l) process(es); see $logdir"
		for f in $(echo "$files" | head -n 3); do
			echo "---- $f"
			sed -n '/VALGRINDERROR-BEGIN/,/VALGRINDERROR-END/p' "$f" | head -n 60
		done
		echo "----"
	fi
}

# run_labeled LABEL CMD...: run CMD (a scripts/test.sh of one version), count
# its tests here as LABEL/name, pass its other output through, and fail
# LABEL/run when it ends without its summary line or with a failure it did
# not count.  CMD runs in a process group of its own, whose leader's pid is in
# $CHILD_PIDFILE while it runs (stop_child signals that group).
CHILD_PIDFILE=$TMPDIR_APIKEYS/child.pid
run_labeled() {
	local label=$1; shift
	local line rest name detail rc=none summary=0 failed_here=$FAILED passed_here=$PASSED
	local red=$'\033[31mFAILED\033[0m  ' mark="__apikeys_exit_status="
	while IFS= read -r line; do
		case $line in
			"$mark"*) rc=${line#"$mark"} ;;
			"ok      "*) pass "$label/${line#"ok      "}" ;;
			"$red"*)
				rest=${line#"$red"} name=${rest%%  (*} detail=
				[ "$name" = "$rest" ] || { detail=${rest#*  (}; detail=${detail%)}; }
				fail "$label/$name" "$detail" ;;
			"failed: "*) ;;
			*[0-9]" passed, "*[0-9]" failed") summary=1 ;;
			*) printf '%s\n' "$line" ;;
		esac
	done < <(set -m; "$@" 2>&1 & echo $! >"$CHILD_PIDFILE"; wait $!; echo "$mark$?")
	rm -f "$CHILD_PIDFILE"
	if [ $summary = 0 ]; then
		fail "$label/run" "ended without its summary line (exit status $rc)"
	elif [ "$rc" != 0 ] && [ $FAILED -eq $failed_here ]; then
		fail "$label/run" "exit status $rc"
	fi
	say "$label: $((PASSED - passed_here)) passed, $((FAILED - failed_here)) failed"
}

# --matrix / --pg N: this process only dispatches and adds up.
if [ $MATRIX = 1 ] || [ -n "$ONLY_PG" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "--matrix and --pg build roots, mount and chroot: run as root" >&2; exit 1
	fi
	source "$ROOT/scripts/roots.sh"
	mkdir -p "$TMPDIR_APIKEYS"
	# Interrupted: stop the version's run (its servers stop with it), then
	# unmount; the EXIT trap unmounts in every case.
	stop_child() {
		local pid
		pid=$(cat "$CHILD_PIDFILE" 2>/dev/null) || return 0
		kill -TERM -- "-$pid" 2>/dev/null || return 0
		for _ in $(seq 60); do kill -0 -- "-$pid" 2>/dev/null || return 0; sleep 1; done
		kill -KILL -- "-$pid" 2>/dev/null
		rm -f "$CHILD_PIDFILE"
	}
	trap root_unmount_all EXIT
	trap 'stop_child; exit 130' INT TERM
	if [ $MATRIX = 1 ]; then
		say "pg15: on this machine"
		run_labeled pg15 env PGVER=15 "$ROOT/scripts/test.sh" "${PASS_ARGS[@]}"
		VERSIONS=(17 18)
	else
		VERSIONS=("$ONLY_PG")
	fi
	for v in "${VERSIONS[@]}"; do
		if ! root_ensure "$v"; then
			fail "pg$v/root" "no Debian root for PostgreSQL $v"; continue
		fi
		if ! root_mount "$v"; then
			fail "pg$v/root" "could not mount /proc, /dev or the repository in it"
			root_unmount_all; continue
		fi
		say "pg$v: inside $ROOTS_DIR/pg$v"
		run_labeled "pg$v" root_run "$v" "${PASS_ARGS[@]}"
		root_unmount_all
	done
	finish
fi

# ---------------------------------------------------------------------------
ensure_deps
prepare_tmp
if [ "${APIKEYS_SKIP_BUILD:-}" = 1 ]; then
	say "APIKEYS_SKIP_BUILD=1: testing the apikeys already installed"
elif ! build_install; then
	fail build "make failed (warnings are errors: -Werror)"
	finish
else
	pass build
fi

# --load-extension for the extensions apikeys requires, then apikeys itself
LOAD_EXT=()
for ext in $(sed -n "s/^[[:space:]]*requires[[:space:]]*=[[:space:]]*'\(.*\)'.*/\1/p" "$ROOT/apikeys.control" | tr ',' ' ') apikeys; do
	LOAD_EXT+=(--load-extension="$ext")
done

if want regress; then
	tests_with_expected "$ROOT/sql" sql "$ROOT/expected" regress
	if [ ${#TESTS[@]} -gt 0 ]; then
		if [ $VALGRIND = 1 ]; then
			command -v valgrind >/dev/null || { apt-get install -y -qq valgrind >/dev/null 2>&1 || true; }
			vdir=$TMPDIR_APIKEYS/regress-valgrind
			as_pg rm -rf "$vdir"
			make_valgrind_bindir "$vdir/bin" "$vdir/valgrind-logs"
			PGCTLTIMEOUT=600 run_regress_driver regress "$PG_REGRESS" "$vdir/out" $VALGRIND_PORT "$ROOT" \
				"$vdir/bin" "${LOAD_EXT[@]}" --max-connections=2 -- "${TESTS[@]}"
			check_valgrind_logs "$vdir/valgrind-logs"
		else
			run_regress_driver regress "$PG_REGRESS" "$TMPDIR_APIKEYS/regress" $REGRESS_PORT "$ROOT" \
				"$PGBIN" "${LOAD_EXT[@]}" -- "${TESTS[@]}"
		fi
	fi
fi

if want isolation; then
	tests_with_expected "$ROOT/test/isolation/specs" spec "$ROOT/test/isolation/expected" isolation
	if [ ${#TESTS[@]} -gt 0 ]; then
		run_regress_driver isolation "$PG_ISOLATION_REGRESS" "$TMPDIR_APIKEYS/isolation" $ISOLATION_PORT \
			"$ROOT/test/isolation" "$PGBIN" -- "${TESTS[@]}"
	fi
fi

if want shell; then
	as_pg mkdir -p "$TMPDIR_APIKEYS/t"
	for t in $(find "$ROOT/test/t" -maxdepth 1 -name '*.sh' 2>/dev/null | LC_ALL=C sort); do
		name=$(basename "$t" .sh)
		log=$TMPDIR_APIKEYS/t/$name.log
		say "shell: $name"
		start=$SECONDS
		if bash "$t" >"$log" 2>&1; then
			# a test that cannot run here ends with "SKIP: reason" (lib.sh skip)
			reason=$(sed -n 's/^SKIP: //p' "$log" | tail -n 1)
			pass "shell/$name ($((SECONDS - start)) s${reason:+; SKIPPED: $reason})"
		else
			fail "shell/$name" "exit status $?; log: ${log#"$ROOT"/}"
			tail -n 25 "$log"; echo "----"
		fi
	done
fi

if want fuzz; then
	say "fuzz: fuzz_key_format for ${FUZZ_SECONDS}s"
	fdir=$TMPDIR_APIKEYS/fuzz
	# postgresql-server-dev-15 brings clang-14; the libFuzzer runtime is only
	# a Recommends of it, so fetch it when it is missing and we may.
	CLANG=$(command -v clang || command -v clang-14 || ls /usr/lib/llvm-*/bin/clang 2>/dev/null | tail -n 1)
	if [ -n "$CLANG" ] && [ "$(id -u)" = 0 ] &&
			! ls "$("$CLANG" -print-runtime-dir 2>/dev/null)"/libclang_rt.fuzzer*.a >/dev/null 2>&1; then
		ver=$("$CLANG" -dumpversion | cut -d. -f1)
		say "installing libclang-rt-$ver-dev (libFuzzer runtime)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libclang-rt-$ver-dev" >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libclang-rt-$ver-dev" >/dev/null 2>&1; }
	fi
	if [ -z "$CLANG" ]; then
		fail fuzz/fuzz_key_format "clang is not installed (apt-get install clang) - fuzz target not run"
	else
		rm -rf "$fdir"; mkdir -p "$fdir/corpus"
		if ! "$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
				-I"$ROOT/src" "$ROOT/test/fuzz/fuzz_key_format.c" "$ROOT/src/key_format.c" \
				-o "$fdir/fuzz_key_format" >"$fdir/build.log" 2>&1; then
			fail fuzz/fuzz_key_format "build failed"; cat "$fdir/build.log"
		elif "$fdir/fuzz_key_format" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 \
				-artifact_prefix="$fdir/" "$fdir/corpus" "$ROOT/test/fuzz/corpus" >"$fdir/fuzz.log" 2>&1; then
			runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$fdir/fuzz.log")
			pass "fuzz/fuzz_key_format (${runs:-?} runs)"
		else
			fail fuzz/fuzz_key_format "crash or invariant failure; artifacts in ${fdir#"$ROOT"/}/"
			grep -E 'invariant failed|ERROR: |SUMMARY|runtime error' "$fdir/fuzz.log" | head -n 10
			ls "$fdir"/crash-* "$fdir"/leak-* "$fdir"/timeout-* 2>/dev/null
		fi
	fi
fi

finish
