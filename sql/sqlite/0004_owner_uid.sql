-- apppass schema, version 4: the account each app password belongs to.
--
-- A user name can outlive its account: userdel, then useradd gives the name to someone
-- else. owner_uid is the uid that held the name when the password was made (apppassd
-- asks NSS), and a login is refused (reason=owner_changed) when the name's uid is not
-- that one any more: the new account does not inherit the old one's app passwords.
--
--   a uid   the account that held the name;
--   NULL    no account held it (a name only the PAM stack knows): the password works
--           while no account has the name, and stops when one gets it;
--   -1      not known yet: rows made before this migration (or written without an
--           owner). No account has uid -1 (POSIX reserves (uid_t)-1). apppassd adopts
--           them when it opens the store: each gets the uid its user has then, or NULL,
--           and apppassd logs how many and which users have no account. Until then a
--           login with one is refused.
ALTER TABLE app_password ADD COLUMN owner_uid INTEGER DEFAULT -1;

-- What apppassd has still to adopt, found without reading the whole table: empty once
-- it has.
CREATE INDEX app_password_unadopted ON app_password (user) WHERE owner_uid = -1;
