-- apppass schema, version 5 (PostgreSQL): the source networks each app password may be
-- used from, as sql/sqlite/0005_networks.sql (which says what the values mean).
--
-- The login role reads the column through its SELECT on app_password (roles.sql) and
-- cannot change it: only the administrators' apppassd does (`apppass networks`).
ALTER TABLE app_password ADD COLUMN networks text NOT NULL DEFAULT '';
