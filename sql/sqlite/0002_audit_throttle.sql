-- apppass schema, version 2: the audit log and per-(user, remote host) throttling.

-- One row per login attempt of a user who has app passwords; bounded by the
-- configuration (audit_max_age, audit_max_rows).
CREATE TABLE event (
    id          INTEGER PRIMARY KEY,
    time        INTEGER NOT NULL,
    user        TEXT    NOT NULL,
    service     TEXT    NOT NULL,
    -- The app password the attempt named, when its selector was this user's.
    password_id INTEGER,
    rhost       TEXT,
    -- 'success', 'failure' or 'throttled'.
    outcome     TEXT    NOT NULL,
    -- Why a failure failed (wrong_password, expired, ...); NULL on success.
    reason      TEXT
) STRICT;

CREATE INDEX event_user_time ON event (user, time);
CREATE INDEX event_time ON event (time);

-- Failures that could be guesses, per user and remote host ('' when PAM_RHOST is unset):
-- a stale phone locks out only itself, not its owner's other devices.
CREATE TABLE throttle (
    user         TEXT    NOT NULL,
    rhost        TEXT    NOT NULL,
    failures     INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER,
    PRIMARY KEY (user, rhost)
) STRICT, WITHOUT ROWID;
