-- Variables (secrets encrypted at rest), resource types, resources, and each
-- workspace's wrapped data keys (gristmill.common.variables, .resources, .keystore).

-- A workspace's data keys, each wrapped by a master key: a StoredWorkspaceKeys as JSON.
-- ``version`` grows on every change, so that caches of the unwrapped keys see staleness.
-- Writers of secrets hold this row FOR SHARE; a rotation holds it FOR UPDATE.
CREATE TABLE workspace_keys (
    workspace_id text PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    keys         jsonb NOT NULL,
    version      bigint NOT NULL DEFAULT 1,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Text variables. A secret's value is its ciphertext ('$gm1$...'), bound to the
-- workspace and the path; other values are stored as they are.
CREATE TABLE variables (
    workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path         text NOT NULL,
    value        text NOT NULL,
    is_secret    boolean NOT NULL DEFAULT false,
    description  text NOT NULL DEFAULT '',
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    edited_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, path),
    CONSTRAINT variables_secret_is_encrypted CHECK (NOT is_secret OR value LIKE '$gm%')
);

-- Kinds of resources; ``schema`` (a JSON Schema, or NULL) validates their values.
CREATE TABLE resource_types (
    workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL,
    schema       jsonb,
    description  text NOT NULL DEFAULT '',
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    edited_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, name)
);

-- JSON values of a type (connection settings, script state, ...); strings
-- '$var:<path>' and '$res:<path>' in them are references resolved on demand.
CREATE TABLE resources (
    workspace_id  text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path          text NOT NULL,
    resource_type text NOT NULL,
    value         jsonb,
    description   text NOT NULL DEFAULT '',
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    edited_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, path),
    CONSTRAINT resources_type_fkey FOREIGN KEY (workspace_id, resource_type)
        REFERENCES resource_types (workspace_id, name)
);
CREATE INDEX resources_type_idx ON resources (workspace_id, resource_type);
