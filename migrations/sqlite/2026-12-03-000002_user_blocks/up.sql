-- Disabled accounts, as in migrations/postgres (000003).
CREATE TABLE user_blocks
(
    user_id     TEXT PRIMARY KEY NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    disabled_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))
);
