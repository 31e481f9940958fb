-- apppass schema, version 5: the source networks each app password may be used from.
--
-- The canonical list apppassd writes (`192.0.2.0/24,2001:db8::/48`, a single address
-- without its prefix length); '' means from anywhere, as every row made before. A login
-- whose PAM_RHOST is not a literal address inside one of them is refused
-- (reason=network). Text that does not read as a list refuses every login: a damaged
-- row must not open up.
ALTER TABLE app_password ADD COLUMN networks TEXT NOT NULL DEFAULT '';
