-- The script registry: one row per saved version of a script.
-- A version is immutable once written (its hash is derived from its content, its
-- settings and its parent); only the archived/deleted flags change afterwards, and
-- deleting a single version erases its content but keeps the row.

CREATE TABLE scripts (
    workspace_id  text NOT NULL,
    hash          text NOT NULL CHECK (hash ~ '^[0-9a-f]{16}$'),
    path          text NOT NULL,
    -- Direct parent first, then its parent, ... (a bounded number of ancestors).
    parent_hashes text[] NOT NULL DEFAULT '{}',
    summary       text NOT NULL DEFAULT '',
    description   text NOT NULL DEFAULT '',
    content       text NOT NULL,
    language      text NOT NULL,
    kind          text NOT NULL DEFAULT 'script',
    -- JSON Schema of main's inputs: sent by the client or read from the code at save time.
    schema        jsonb,
    lock          text,
    -- Why resolving the dependencies of this version failed (uv's report), if it did.
    lock_error    text,
    -- Worker tag override; NULL means the language's default tag.
    tag           text,
    is_template   boolean NOT NULL DEFAULT false,
    -- Other settings of the saved script (timeout, priority, envs, ...), kept as sent.
    extra         jsonb NOT NULL DEFAULT '{}'::jsonb,
    archived      boolean NOT NULL DEFAULT false,
    deleted       boolean NOT NULL DEFAULT false,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, hash)
);
-- Latest version at a path, and listings of latest versions per path.
CREATE INDEX scripts_path_idx ON scripts (workspace_id, path, created_at DESC);
