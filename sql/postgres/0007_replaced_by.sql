-- apppass schema, version 7 (PostgreSQL): regenerated app passwords keep their history,
-- as sql/sqlite/0007_replaced_by.sql (which says what the column means).
--
-- The login role reads the column through its SELECT on app_password (roles.sql) and
-- cannot change it: only the administrators' apppassd regenerates.
ALTER TABLE app_password ADD COLUMN replaced_by bigint;
