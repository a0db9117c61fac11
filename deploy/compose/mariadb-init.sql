-- Run once by the MariaDB image when its data volume is new: cdrmunch keeps billing rows in
-- their own database (billingdb.url), which its user may create tables in.
CREATE DATABASE IF NOT EXISTS billing;
GRANT ALL PRIVILEGES ON billing.* TO 'cdrmunch'@'%';
