-- PiCloud schema 4: invocation records, the per-app log that `GET /v1/apps/APP/logs` and
-- `picloud logs` read. Diagnostics, not catalog: writing them never bumps picloud_revision or
-- sends a notification.

-- The last sequence number given out per app. An append takes the app's row lock (an upsert),
-- so appends to one app from several nodes serialise and each commits its numbers in order: a
-- reader polling with `after = N` can never miss a record that commits later with a smaller
-- number. Numbers are contiguous, so keeping the newest K is `DELETE ... seq <= last - K`.
CREATE TABLE invocation_seqs (
    app  text COLLATE "C" PRIMARY KEY REFERENCES apps (name) ON DELETE CASCADE,
    last bigint NOT NULL CHECK (last > 0)
);

CREATE TABLE invocations (
    app    text COLLATE "C" NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    seq    bigint NOT NULL CHECK (seq > 0),
    -- Start of the invocation, Unix milliseconds (also inside the record).
    ts_ms  bigint NOT NULL CHECK (ts_ms >= 0),
    -- The whole InvocationRecord as JSON: new fields need no migration. json, not jsonb: jsonb
    -- refuses the escape \u0000, and a script may log a NUL; json keeps the text as written.
    record json   NOT NULL CHECK (json_typeof(record) = 'object'),
    PRIMARY KEY (app, seq)
);
