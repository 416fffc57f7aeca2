# test/bench/bench_lib.sh - what the benchmarks share (sourced after
# scripts/lib.sh): waiting for an idle machine, 2 MB pages for a large
# shared memory, the median of a list.

# idle_machine: wait (BENCH_IDLE_WAIT seconds, 120, at most) until the CPUs
# are 95 % idle over 2 s: the kernel may still be writing back or compacting
# memory after a load, and that lands on whichever run comes next
idle_machine() {
	local a b i
	for i in $(seq 1 $(( ${BENCH_IDLE_WAIT:-120} / 2 ))); do
		a=$(awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
		sleep 2
		b=$(awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
		awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
			exit !((y[1] - x[1]) >= 0.95 * (y[2] - x[2])) }' && return 0
	done
	[ "${BENCH_IDLE_WAIT:-120}" -lt 2 ] || echo "warning: the machine did not become idle" >&2
}

# huge_pages_on SHARED_BUFFERS BYTES: reserve 2 MB pages (vm.nr_hugepages,
# root only) for a server of SHARED_BUFFERS (e.g. 1GB) plus BYTES of apikeys
# shared memory; sets HUGE to the huge_pages setting to start it with and
# OLD_HUGE to what huge_pages_off gives back.  With 4 kB pages every new
# backend takes a page fault for each page of the cache it touches, and
# misses the TLB on most lookups (about 10 % of a random-key run).
# BENCH_HUGE_PAGES=0: plain pages.
huge_pages_on() {
	local sb_mb need
	HUGE="huge_pages = off"
	OLD_HUGE=
	[ "${BENCH_HUGE_PAGES:-1}" = 1 ] && [ -w /proc/sys/vm/nr_hugepages ] || return 0
	OLD_HUGE=$(cat /proc/sys/vm/nr_hugepages)
	sb_mb=$(echo "$1" | awk '/GB$/ {print $0 * 1024; next} {print $0 + 0}')
	need=$(( OLD_HUGE + sb_mb / 2 + $2 / 2097152 + 256 ))
	echo "$need" > /proc/sys/vm/nr_hugepages
	if [ "$(cat /proc/sys/vm/nr_hugepages)" = "$need" ]; then
		HUGE="huge_pages = on"
	else
		echo "$OLD_HUGE" > /proc/sys/vm/nr_hugepages
		OLD_HUGE=
	fi
}
# huge_pages_off: give back what huge_pages_on reserved
huge_pages_off() {
	[ -z "$OLD_HUGE" ] || echo "$OLD_HUGE" > /proc/sys/vm/nr_hugepages
}

# median X...: the median of numbers (the mean of the middle two of an even count)
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "-"; exit }
		if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
