-- Creates the IAM database user of the secure-access stack, once, as the master user.
-- `rds-iam-proxy admin` runs this file (built into the binary) and puts the stack's DbUser in
-- place of every 'iam_user' literal. Run by hand, replace iam_user if DbUser is another name.
-- Replace app with your database. See deploy/README.md, "Create the IAM database user".

-- Logs in only with an IAM token (rds-db:connect), only over TLS.
CREATE USER IF NOT EXISTS 'iam_user'@'%' IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS' REQUIRE SSL;

-- A working database and full rights on it.
CREATE DATABASE IF NOT EXISTS app;
GRANT ALL PRIVILEGES ON app.* TO 'iam_user'@'%';

-- Or, for a read-only user, instead of the GRANT above:
-- GRANT SELECT, SHOW VIEW ON app.* TO 'iam_user'@'%';
