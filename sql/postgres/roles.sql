-- The login role of the front ends' apppassd, with the least privilege a login needs.
-- Run it as a superuser (or the database's owner with CREATEROLE) in the apppass
-- database, once the administrators' apppassd has created the schema (it does when it
-- first starts), and again after an upgrade whose migration added a table:
--
--     psql -d apppass -f roles.sql
--
-- and give the role a password (psql: \password apppass_login) that goes into the
-- front ends' db_passfile. The administrators' role (apppass_admin in the README) owns
-- the database; the apppassd that connects as it creates and migrates the schema,
-- takes additions, revocations and unlocks, and trims the audit log.
--
-- A login reads app_password (each row's owner_uid included: it compares it with the
-- uid the user has now; and its networks, to match PAM_RHOST against) and apppass_schema, writes a password's usage columns, adds
-- audit events and keeps the throttle table (counts, clears, and deletes the rows
-- beyond throttle_max_rows and, in apppassd's hourly maintenance, the expired ones).
-- Schema version 3 altered the throttle table rather than making it anew, so these
-- grants survive that upgrade.
--
-- It cannot create, revoke, re-hash, re-own or re-scope (networks) an app password, read, change or delete
-- the audit log, nor change the schema: a front end's apppassd that is asked to answers
-- "permission denied". The one revocation it may make is through
-- apppass_revoke_on_password_change() (schema version 6): all of one user's app
-- passwords, with an audit event each, when pam_apppass reports that the user's account
-- password was changed on a front end.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'apppass_login') THEN
        CREATE ROLE apppass_login LOGIN;
    END IF;
END
$$;

REVOKE ALL ON apppass_schema, app_password, event, throttle FROM apppass_login;
GRANT SELECT ON apppass_schema TO apppass_login;
GRANT SELECT ON app_password TO apppass_login;
GRANT UPDATE (last_used, last_service, last_rhost, use_count) ON app_password TO apppass_login;
GRANT INSERT ON event TO apppass_login;
GRANT SELECT, INSERT, UPDATE, DELETE ON throttle TO apppass_login;
-- Schema version 6 and later (a database not migrated yet has no such function: run
-- this file again once it is).
DO $$
BEGIN
    IF to_regprocedure('apppass_revoke_on_password_change(text, bigint)') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION apppass_revoke_on_password_change(text, bigint)
            TO apppass_login;
    END IF;
END
$$;
