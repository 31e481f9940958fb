-- apppass schema, version 6 (PostgreSQL): revocation when the account password changes.
--
-- A front end's apppassd connects as the login role (roles.sql), which may not revoke
-- app passwords. When pam_apppass's password hook reports that a user's account
-- password was changed, that apppassd must revoke all of that user's app passwords:
-- this function does exactly that and nothing else, with its owner's rights (the
-- administrators' role, which runs the migrations). It revokes every active app
-- password of one user, writes one audit event per revocation (outcome 'revoked',
-- reason 'password-change') and returns how many. It cannot create, re-hash, re-own
-- or un-revoke a password, nor read, change or delete the audit log.
--
-- search_path is pinned to the schema the tables were made in (then pg_temp, last), so
-- that the caller's objects cannot stand in for app_password or event.
DO $migration$
BEGIN
    EXECUTE format($create$
        CREATE OR REPLACE FUNCTION apppass_revoke_on_password_change(p_user text, p_at bigint)
        RETURNS bigint
        LANGUAGE sql
        VOLATILE
        SECURITY DEFINER
        SET search_path = %I, pg_temp
        AS $body$
            WITH revoked AS (
                UPDATE app_password SET revoked = p_at
                 WHERE "user" = p_user AND revoked IS NULL
                RETURNING id, service
            ), logged AS (
                INSERT INTO event (time, "user", service, password_id, rhost, outcome, reason)
                SELECT p_at, p_user, service, id, NULL, 'revoked', 'password-change'
                  FROM revoked
                RETURNING 1
            )
            SELECT count(*) FROM logged
        $body$
    $create$, current_schema());
END
$migration$;

-- Only the roles roles.sql names may call it.
REVOKE ALL ON FUNCTION apppass_revoke_on_password_change(text, bigint) FROM PUBLIC;
