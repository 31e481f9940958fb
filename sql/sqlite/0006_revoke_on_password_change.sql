-- apppass schema, version 6: revocation when the account password changes.
--
-- Nothing changes in SQLite: apppassd revokes a user's app passwords and writes one
-- audit event per revocation (outcome 'revoked', reason 'password-change') in one
-- transaction with the tables it already has. The version moves in step with
-- PostgreSQL's (sql/postgres/0006_revoke_on_password_change.sql), which needs a function.
SELECT 1;
