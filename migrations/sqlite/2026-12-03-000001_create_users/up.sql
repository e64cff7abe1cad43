-- The embedded backend's users table: the PostgreSQL schema's semantics
-- (migrations/postgres) in SQLite's types. Ids are uuid text, timestamps
-- "YYYY-MM-DD HH:MM:SS.SSS+00:00" text (what diesel reads and writes), the
-- role a checked text. Emails are unique regardless of letter case, and
-- updated_at is maintained by the database.
CREATE TABLE users
(
    user_id    TEXT PRIMARY KEY NOT NULL CHECK ( length(user_id) = 36 ),
    first_name TEXT NOT NULL CHECK ( first_name <> '' AND length(first_name) <= 32 ),
    last_name  TEXT NOT NULL CHECK ( last_name <> '' AND length(last_name) <= 32 ),
    email      TEXT NOT NULL CHECK ( email <> '' AND length(email) <= 64 ),
    password   TEXT NOT NULL CHECK ( length(password) > 0 AND length(password) <= 250 ),
    role       TEXT NOT NULL DEFAULT 'user' CHECK ( role IN ('admin', 'user') ),
    avatar     TEXT CHECK ( avatar IS NULL OR length(avatar) <= 250 ),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))
);

CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- Any update that leaves updated_at alone stamps it (recursive triggers are
-- off by default, so the inner UPDATE does not fire this again).
CREATE TRIGGER users_touch_updated_at
    AFTER UPDATE ON users
    FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE users
    SET updated_at = strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')
    WHERE user_id = NEW.user_id;
END;
