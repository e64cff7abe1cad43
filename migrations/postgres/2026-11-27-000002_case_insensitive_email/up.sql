-- Fixes the Go schema in place, keeping every row:
-- * emails are unique regardless of letter case (the Go service let
--   `A@x.io` and `a@x.io` coexist and then could not log either in);
-- * updated_at is always set and maintained by the database.
-- The user_id default is left alone: the service always supplies ids, and the
-- Go service (during a rollback) relies on its uuid_generate_v4() default.

DO $$
DECLARE
    duplicates bigint;
BEGIN
    SELECT count(*) INTO duplicates
    FROM (SELECT 1 FROM users GROUP BY lower(email) HAVING count(*) > 1) AS d;
    IF duplicates > 0 THEN
        RAISE EXCEPTION 'users.email: % address(es) are registered more than once with different letter case; merge or rename those accounts (SELECT lower(email) FROM users GROUP BY 1 HAVING count(*) > 1), then start the service again', duplicates;
    END IF;
END
$$;

CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower_key ON users (lower(email));
-- Subsumed by the case-insensitive index above.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_email_key;

UPDATE users SET updated_at = created_at WHERE updated_at IS NULL;
ALTER TABLE users
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET NOT NULL;

CREATE OR REPLACE FUNCTION users_touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS users_touch_updated_at ON users;
CREATE TRIGGER users_touch_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_touch_updated_at();
