-- PiCloud schema 6: named admin tokens with a role and an app scope (issue 9), and the audit
-- log of admin writes, shared by every node of a cluster.
--
-- Existing tokens (bare hashes) keep what they could do: admin on every app. The oldest is
-- named 'bootstrap' (the token made at first start or set by PICLOUD_ADMIN_TOKEN), the others
-- 'token-2', 'token-3', ... in creation order.

ALTER TABLE admin_tokens
    ADD COLUMN name text COLLATE "C",
    ADD COLUMN role text NOT NULL DEFAULT 'admin' CHECK (role IN ('read', 'deploy', 'admin')),
    -- '"*"' or a JSON array of app names (picloud_core::access::AppScope's wire form).
    ADD COLUMN apps jsonb NOT NULL DEFAULT '"*"',
    ADD COLUMN last_used_at_ms bigint CHECK (last_used_at_ms >= 0);

UPDATE admin_tokens AS t SET name = numbered.name
FROM (
    SELECT hash,
           CASE WHEN row_number() OVER (ORDER BY created_at_ms, hash) = 1 THEN 'bootstrap'
                ELSE 'token-' || row_number() OVER (ORDER BY created_at_ms, hash) END AS name
    FROM admin_tokens
) AS numbered
WHERE t.hash = numbered.hash;

ALTER TABLE admin_tokens
    ALTER COLUMN name SET NOT NULL,
    ADD CONSTRAINT admin_tokens_name_key UNIQUE (name),
    ADD CONSTRAINT admin_tokens_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$');

CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    ts_ms    bigint NOT NULL CHECK (ts_ms >= 0),
    token    text,
    node     text NOT NULL,
    method   text NOT NULL,
    path     text NOT NULL,
    app      text,
    details  jsonb NOT NULL,
    revision bigint CHECK (revision >= 0),
    status   integer NOT NULL CHECK (status BETWEEN 100 AND 599),
    code     text
);
