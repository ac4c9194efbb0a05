-- PiCloud schema 3: the per-app key-value store scripts reach through `kv::*`. Data, not
-- catalog: writing it never bumps picloud_revision or sends a notification.
--
-- Expiry is lazy: a row whose expires_at_ms <= now is never returned; it is removed when its
-- key is written or deleted, or when the app adds a new key (which first purges the app's
-- expired rows, under the app's advisory lock, then counts its rows against keys_max).
CREATE TABLE kv (
    app           text COLLATE "C" NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    -- Bounded in bytes by the writer (kv_key_bytes_max); never empty.
    key           text COLLATE "C" NOT NULL CHECK (key <> ''),
    value         jsonb  NOT NULL,
    -- Unix milliseconds; NULL = never expires.
    expires_at_ms bigint NULL CHECK (expires_at_ms >= 0),
    PRIMARY KEY (app, key)
);

-- The purge of an app's expired rows reads only those rows.
CREATE INDEX kv_expiry ON kv (app, expires_at_ms) WHERE expires_at_ms IS NOT NULL;
