-- PiCloud schema 5: per-app variables and secrets, cron schedules, event triggers (all part of
-- the catalog: writing them bumps the revision), and the cluster-wide state of schedule runs
-- (not part of the catalog: claiming a run bumps nothing).

CREATE TABLE app_env (
    app   text COLLATE "C" NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    -- picloud_core::model::validate_env_name.
    name  text COLLATE "C" NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    value text NOT NULL,
    PRIMARY KEY (app, name)
);

CREATE TABLE schedules (
    app      text COLLATE "C" NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    position integer NOT NULL CHECK (position >= 0),
    name     text COLLATE "C" NOT NULL CHECK (name ~ '^[a-z0-9_][a-z0-9_-]{0,62}$'),
    cron     text NOT NULL CHECK (cron <> ''),
    script   text COLLATE "C" NOT NULL,
    PRIMARY KEY (app, name),
    UNIQUE (app, position),
    -- The script must exist (that it is an endpoint is checked by the writer). Checked at
    -- commit, like imports: deleting an app cascades in no defined order.
    FOREIGN KEY (app, script) REFERENCES scripts (app, name) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE triggers (
    app      text COLLATE "C" NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    position integer NOT NULL CHECK (position >= 0),
    event    text COLLATE "C" NOT NULL CHECK (event <> '' AND octet_length(event) <= 128),
    script   text COLLATE "C" NOT NULL,
    PRIMARY KEY (app, position),
    UNIQUE (app, event, script),
    FOREIGN KEY (app, script) REFERENCES scripts (app, name) DEFERRABLE INITIALLY DEFERRED
);

-- The last due time each schedule was claimed for, by any node. A node runs a due time only
-- if its conditional upsert moves this forward: exactly one node per due time.
CREATE TABLE schedule_runs (
    app         text COLLATE "C" NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    name        text COLLATE "C" NOT NULL,
    last_run_ms bigint NOT NULL CHECK (last_run_ms >= 0),
    PRIMARY KEY (app, name)
);
