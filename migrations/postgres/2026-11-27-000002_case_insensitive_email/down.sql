DROP TRIGGER IF EXISTS users_touch_updated_at ON users;
DROP FUNCTION IF EXISTS users_touch_updated_at();
-- Back to the Go schema (the Go service can run on the result).
ALTER TABLE users
    ALTER COLUMN updated_at DROP NOT NULL,
    ALTER COLUMN updated_at SET DEFAULT CURRENT_TIMESTAMP;
DROP INDEX IF EXISTS users_email_lower_key;
ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);
