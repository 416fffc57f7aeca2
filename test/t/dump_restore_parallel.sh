#!/usr/bin/env bash
# test/t/dump_restore_parallel.sh - dump_restore.sh with a parallel restore
# (pg_restore -j 4), which loads the extension's config tables over several
# connections at once.  Own cluster: tmp/t_dump_parallel, port 54396.
DUMP_RESTORE_NAME=t_dump_parallel DUMP_RESTORE_PORT=54396 DUMP_RESTORE_MODES=parallel \
	exec bash "$(dirname "${BASH_SOURCE[0]}")/dump_restore.sh"
