# apikeys - API key management inside PostgreSQL (PGXS build)

EXTENSION    = apikeys
# The version is default_version in apikeys.control, and only there.
EXTVERSION   = $(shell sed -n "s/^default_version *= *'\\(.*\\)'.*/\\1/p" apikeys.control)
MODULE_big   = apikeys
OBJS         = $(patsubst %.c,%.o,$(wildcard src/*.c))
# The current version's install script is built from the src/sql/ parts, in
# file-name order.  Released versions' install scripts (released/) and
# the upgrade scripts (apikeys--X--Y.sql) are plain data files: a released
# script is never edited again, and every schema change after it goes into
# an upgrade script as well as into src/sql/ (test/t/upgrade.sh compares).
DATA_built   = apikeys--$(EXTVERSION).sql
DATA         = $(wildcard released/apikeys--*.sql) $(wildcard apikeys--*--*.sql)
EXTRA_CLEAN  = apikeys--$(EXTVERSION).sql
PGFILEDESC   = "apikeys - API key management inside PostgreSQL"

# make installcheck: every regression file, then every isolation spec, each
# against a throwaway instance of its own (initdb refuses root: run it as the
# user that owns the tree) started with the library preloaded.
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-instance=tmp/installcheck/regress --temp-config=test/regress.conf \
               $(foreach e,$(REQUIRES) apikeys,--load-extension=$(e))
ISOLATION    = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --outputdir=output_iso \
               --temp-instance=tmp/installcheck/isolation --temp-config=test/regress.conf
# what apikeys.control requires, loaded before apikeys
REQUIRES     = $(shell sed -n "s/^requires *= *'\\(.*\\)'.*/\\1/p" apikeys.control | tr ',' ' ')

PG_CONFIG   ?= pg_config
PG_CPPFLAGS += -Isrc
PG_CFLAGS   += -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -Werror

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

apikeys--$(EXTVERSION).sql: $(sort $(wildcard src/sql/*.sql))
	cat $^ > $@

# PGXS does not track headers: rebuild every object when one changes.
$(OBJS): $(wildcard src/*.h)

# pg_regress makes the temporary instance's directory, not its parents.
installcheck: installcheck-dirs
.PHONY: installcheck-dirs
installcheck-dirs:
	@mkdir -p tmp/installcheck
