-- PiCloud schema 1: everything the embedded store holds (apps, scripts with their history,
-- routes, host claims, admin token hashes) plus the global revision counter.
--
-- Names are COLLATE "C" so they sort by bytes, as in the embedded store. Shape CHECKs repeat the
-- API's name rules (picloud_core::model) so that no other writer can store what a node could
-- not serve. Times are Unix milliseconds taken from the writing node's clock.

-- One row: the revision of the last committed change. Every write locks this row first
-- (SELECT ... FOR UPDATE), which serialises writers across all nodes, so revisions commit in
-- order and a reader that sees revision N sees every change up to N.
CREATE TABLE picloud_revision (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision  bigint  NOT NULL CHECK (revision >= 0)
);
INSERT INTO picloud_revision (singleton, revision) VALUES (true, 0);

CREATE TABLE apps (
    name          text COLLATE "C" PRIMARY KEY
                  CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    -- AppConfig as JSON (hosts, debug, limits): new config fields need no migration.
    config        jsonb  NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    created_at_ms bigint NOT NULL CHECK (created_at_ms >= 0),
    updated_at_ms bigint NOT NULL CHECK (updated_at_ms >= created_at_ms),
    -- Revision of the last change to the app or anything in it: the sync daemon reloads only
    -- apps with revision > the one it has.
    revision      bigint NOT NULL CHECK (revision > 0)
);
CREATE INDEX apps_revision ON apps (revision);

-- One owner per host name. The config's host list is the source; this table enforces
-- uniqueness across apps.
CREATE TABLE app_hosts (
    host text COLLATE "C" PRIMARY KEY CHECK (host <> '' AND octet_length(host) <= 253),
    app  text COLLATE "C" NOT NULL REFERENCES apps (name) ON DELETE CASCADE
);
CREATE INDEX app_hosts_app ON app_hosts (app);

CREATE TABLE scripts (
    app           text COLLATE "C" NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    name          text COLLATE "C" NOT NULL CHECK (name ~ '^[a-z0-9_][a-z0-9_-]{0,62}$'),
    kind          text   NOT NULL CHECK (kind IN ('endpoint', 'module')),
    version       bigint NOT NULL CHECK (version > 0),
    hash          text   NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    updated_at_ms bigint NOT NULL CHECK (updated_at_ms >= 0),
    PRIMARY KEY (app, name)
);

-- Every saved version, immutable. Deleting a script deletes its history.
CREATE TABLE script_versions (
    app           text COLLATE "C" NOT NULL,
    name          text COLLATE "C" NOT NULL,
    version       bigint NOT NULL CHECK (version > 0),
    hash          text   NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    source        text   NOT NULL,
    created_at_ms bigint NOT NULL CHECK (created_at_ms >= 0),
    PRIMARY KEY (app, name, version),
    FOREIGN KEY (app, name) REFERENCES scripts (app, name) ON DELETE CASCADE
);

-- An app's route table, in stored order. A route's script must exist (a script in use cannot
-- be deleted); that it is an endpoint, not a module, is checked by the writer under the
-- revision lock.
CREATE TABLE routes (
    app      text COLLATE "C" NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    position integer NOT NULL CHECK (position >= 0),
    method   text NOT NULL
             CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', '*')),
    path     text COLLATE "C" NOT NULL CHECK (path LIKE '/%'),
    script   text COLLATE "C" NOT NULL,
    PRIMARY KEY (app, position),
    UNIQUE (app, method, path),
    FOREIGN KEY (app, script) REFERENCES scripts (app, name)
);

-- SHA-256 of each valid admin token, hex; never the token.
CREATE TABLE admin_tokens (
    hash          text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    created_at_ms bigint NOT NULL CHECK (created_at_ms >= 0)
);
