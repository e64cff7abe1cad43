-- DESTRUCTIVE: drops every account. This reverts the baseline, which on a
-- database inherited from the Go service is that service's own table too.
-- Only for development databases; roll back 000002 alone to return to Go.
DROP TABLE IF EXISTS users;
DROP TYPE IF EXISTS role;
