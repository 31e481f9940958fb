-- apppass schema, version 7: regenerated app passwords keep their history.
--
-- `apppass regenerate ID` makes a new secret with the old one's settings and revokes the
-- old one in the same transaction; the old row stays (its last use, its audit events)
-- and names its successor here, so that `apppass list` can say "replaced by N" and a
-- password is regenerated only once. NULL: never replaced. No foreign key: trimming a
-- user's oldest inactive rows may delete either row first, and a link to a row gone is
-- only history.
ALTER TABLE app_password ADD COLUMN replaced_by INTEGER;
