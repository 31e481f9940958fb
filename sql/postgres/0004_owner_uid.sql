-- apppass schema, version 4 (PostgreSQL): the account each app password belongs to, as
-- sql/sqlite/0004_owner_uid.sql (which says what the values mean).
--
-- Hosts that share this database must agree on uids (one directory: LDAP, sssd), as
-- they must for NFS: each front end compares the stored uid with its own NSS's answer.
-- The login role reads the column through its SELECT on app_password (roles.sql) and
-- cannot change it: only the administrators' apppassd adopts rows.
ALTER TABLE app_password ADD COLUMN owner_uid bigint DEFAULT -1;

CREATE INDEX app_password_unadopted ON app_password ("user") WHERE owner_uid = -1;
