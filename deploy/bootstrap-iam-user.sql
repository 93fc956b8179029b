-- Creates the IAM database user of the secure-access stack, once, as the master user.
-- Replace iam_user if the stack's DbUser parameter is another name, and app with your database.
-- See deploy/README.md, "Create the IAM database user".

-- Logs in only with an IAM token (rds-db:connect), only over TLS.
CREATE USER IF NOT EXISTS 'iam_user'@'%' IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS' REQUIRE SSL;

-- A working database and full rights on it.
CREATE DATABASE IF NOT EXISTS app;
GRANT ALL PRIVILEGES ON app.* TO 'iam_user'@'%';

-- Or, for a read-only user, instead of the GRANT above:
-- GRANT SELECT, SHOW VIEW ON app.* TO 'iam_user'@'%';
