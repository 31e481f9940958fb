-- apppass schema, version 3: throttling per (user, remote host, app password), and a
-- throttle table with a bound.
--
-- Counting per (user, remote host) let an attacker behind the owner's address (a NAT, a
-- CGNAT) lock the owner out. Now each of a user's app passwords has a counter of its
-- own per remote host, and guesses at selectors that are not the user's share one
-- (password_id 0): they never slow down a real password, and a stale device locks out
-- only its own.
--
-- The old rows are dropped, not converted: they are short-lived (a window or a lockout,
-- 15 minutes by default), and they did not say which password was guessed at. At worst
-- a host that was locked out when apppass was upgraded may guess again at once.
DROP TABLE throttle;

CREATE TABLE throttle (
    -- The serial of the row's last write: when the table holds throttle_max_rows, a new
    -- row pushes out the rows with the lowest, the least recently written.
    id           INTEGER PRIMARY KEY,
    user         TEXT    NOT NULL,
    -- The remote host as counted: an IPv4 address, an IPv6 /64 ('2001:db8:1:2::/64'), a
    -- name as the service gave it, or '' when it gave none.
    rhost        TEXT    NOT NULL,
    -- The app password guessed at, or 0 for selectors that are none of the user's.
    password_id  INTEGER NOT NULL,
    failures     INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER,
    -- Attempts refused during the current lockout: the first is an audit event, the
    -- rest are only counted here (and logged to syslog), so that a flood of refused
    -- attempts cannot push real events out of the audit log.
    refused      INTEGER NOT NULL DEFAULT 0,
    -- When the row stops mattering (the end of its window or of its lockout, whichever
    -- is later): apppassd's hourly maintenance deletes expired rows by this index.
    expires      INTEGER NOT NULL,
    UNIQUE (user, rhost, password_id)
) STRICT;

CREATE INDEX throttle_expires ON throttle (expires);
