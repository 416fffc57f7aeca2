# apikeys - API key management inside PostgreSQL (PGXS build)

EXTENSION    = apikeys
MODULE_big   = apikeys
OBJS         = $(patsubst %.c,%.o,$(wildcard src/*.c))
# The install script is built from src/sql/ parts, in file-name order;
# upgrade scripts (apikeys--X--Y.sql) are plain data files.
DATA_built   = apikeys--1.0.sql
DATA         = $(filter-out apikeys--1.0.sql,$(wildcard apikeys--*--*.sql))
EXTRA_CLEAN  = apikeys--1.0.sql
PGFILEDESC   = "apikeys - API key management inside PostgreSQL"

REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=apikeys

PG_CONFIG   ?= pg_config
PG_CPPFLAGS += -Isrc
PG_CFLAGS   += -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -Werror

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

apikeys--1.0.sql: $(sort $(wildcard src/sql/*.sql))
	cat $^ > $@

# PGXS does not track headers: rebuild every object when one changes.
$(OBJS): $(wildcard src/*.h)
