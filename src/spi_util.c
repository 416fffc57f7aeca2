/*
 * spi_util.c - run a management statement through a plan kept for the life
 * of the backend.  Management functions pin search_path and every statement
 * is schema-qualified, so a kept plan cannot be redirected by the caller.
 */
#include "apikeys.h"

void
apikeys_spi_run(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
				Datum *values, const char *nulls, int expected)
{
	int			rc;

	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*plan = p;
	}
	rc = SPI_execute_plan(*plan, values, nulls, false, 0);
	if (rc != expected)
		elog(ERROR, "SPI_execute_plan returned %s for \"%s\"",
			 SPI_result_code_string(rc), sql);
}
