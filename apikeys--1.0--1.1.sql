/* apikeys--1.0--1.1.sql - upgrade apikeys from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION apikeys UPDATE TO '1.1'" to load this file. \quit

-- Every schema change made after 1.0 is here as well as in src/sql/: after
-- this script a 1.0 database has exactly the schema (objects, definitions,
-- privileges, comments) of a fresh 1.1 install; test/t/upgrade.sh checks it.
-- The library serves both: a C function that 1.0's SQL calls keeps its
-- symbol and its contract, and a changed contract gets a new symbol
-- (apikeys_<name>_1_1), as pg_stat_statements does.
