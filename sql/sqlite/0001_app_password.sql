-- apppass schema, version 1.
-- Applied by `apppass init` and by the module when it finds an older schema; never edited
-- once released: a change is a new numbered file.

-- "APPS": tells apppass databases apart from any other SQLite file handed to the module.
PRAGMA application_id = 1095782483;

CREATE TABLE app_password (
    id           INTEGER PRIMARY KEY,
    user         TEXT    NOT NULL,
    -- A service name (imap, pop3, sshd, ...) or '*' for every service.
    service      TEXT    NOT NULL,
    label        TEXT    NOT NULL DEFAULT '',
    -- Public part of the password: finds this row with one index lookup.
    selector     TEXT    NOT NULL UNIQUE,
    -- PHC string: argon2id with its parameters and salt.
    hash         TEXT    NOT NULL,
    -- Times are Unix seconds, UTC.
    created      INTEGER NOT NULL,
    expires      INTEGER,
    revoked      INTEGER,
    last_used    INTEGER,
    last_service TEXT,
    last_rhost   TEXT,
    use_count    INTEGER NOT NULL DEFAULT 0
) STRICT;

-- "Does this user have any app password" and per-user listings.
CREATE INDEX app_password_user ON app_password (user, service);
