-- Baseline: the users table in the shape the Go service created it
-- (01_create_initial_tables.up.sql), so this migration is a no-op on a
-- database that service already owns and creates the table on an empty one.
-- Evolutions live in later migrations, never here.
DO $$
BEGIN
    IF to_regtype('role') IS NULL THEN
        CREATE TYPE role AS ENUM ('admin', 'user');
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS users
(
    user_id    UUID PRIMARY KEY,
    first_name VARCHAR(32)              NOT NULL CHECK ( first_name <> '' ),
    last_name  VARCHAR(32)              NOT NULL CHECK ( last_name <> '' ),
    email      VARCHAR(64) UNIQUE       NOT NULL CHECK ( email <> '' ),
    password   VARCHAR(250)             NOT NULL CHECK ( octet_length(password) <> 0 ),
    role       role                     NOT NULL DEFAULT 'user',
    avatar     VARCHAR(250),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE          DEFAULT CURRENT_TIMESTAMP
);
