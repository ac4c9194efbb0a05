-- PiCloud schema 2: the import graph. One row per (script, module it imports) for the current
-- version of each script, so the store can answer "who depends on NAME" and refuse to delete
-- a module something still imports.

CREATE TABLE script_imports (
    app    text COLLATE "C" NOT NULL,
    script text COLLATE "C" NOT NULL,
    -- Module names: a script name that starts with a letter (picloud_core::model).
    module text COLLATE "C" NOT NULL CHECK (module ~ '^[a-z][a-z0-9_-]{0,62}$'),
    PRIMARY KEY (app, script, module),
    -- The importer's rows go with it.
    FOREIGN KEY (app, script) REFERENCES scripts (app, name) ON DELETE CASCADE,
    -- An imported module cannot be deleted (same app only: the key includes the app). That it
    -- is a module, not an endpoint, is checked by the writer under the revision lock.
    -- Checked at commit: deleting a whole app removes importers and modules by cascades whose
    -- order within the statement is not defined.
    FOREIGN KEY (app, module) REFERENCES scripts (app, name) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX script_imports_module ON script_imports (app, module);
