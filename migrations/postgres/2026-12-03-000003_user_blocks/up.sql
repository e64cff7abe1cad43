-- Disabled accounts, in a table of their own so the users table keeps the
-- Go service's shape (it can still run on this database). A disabled account
-- cannot log in and is not found by lookups; `auth-service admin disable`
-- also ends its sessions.
CREATE TABLE IF NOT EXISTS user_blocks
(
    user_id     UUID PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    disabled_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
