# apikeys - API key management inside PostgreSQL (PGXS build)

EXTENSION    = apikeys
MODULE_big   = apikeys
OBJS         = $(patsubst %.c,%.o,$(wildcard src/*.c))
DATA         = $(wildcard apikeys--*.sql)
PGFILEDESC   = "apikeys - API key management inside PostgreSQL"

REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=apikeys

PG_CONFIG   ?= pg_config
PG_CPPFLAGS += -Isrc
PG_CFLAGS   += -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -Werror

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
