-- Named queries of variables and secrets (gristmill.common.variables) and of the
-- workspaces' wrapped data keys (gristmill.common.keystore).

-- name: insert_variable
-- Answers nothing when the path is taken.
INSERT INTO variables (workspace_id, path, value, is_secret, description, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (workspace_id, path) DO NOTHING
RETURNING path;

-- name: get_variable
SELECT workspace_id, path, value, is_secret, description, created_by, created_at, edited_at
FROM variables
WHERE workspace_id = $1 AND path = $2;

-- name: get_variable_for_update
SELECT workspace_id, path, value, is_secret, description, created_by, created_at, edited_at
FROM variables
WHERE workspace_id = $1 AND path = $2
FOR UPDATE;

-- name: update_variable
-- $2: the current path, $3: the new one (the same when not renamed).
UPDATE variables
SET path = $3, value = $4, is_secret = $5, description = $6, edited_at = now()
WHERE workspace_id = $1 AND path = $2;

-- name: list_variables
-- A secret's stored value never leaves the database through a listing.
SELECT workspace_id, path,
       CASE WHEN is_secret THEN NULL ELSE value END AS value,
       is_secret, description, created_by, created_at, edited_at
FROM variables
WHERE workspace_id = $1 AND ($2::text IS NULL OR starts_with(path, $2::text))
ORDER BY path
LIMIT $3 OFFSET $4;

-- name: delete_variable
DELETE FROM variables WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: variable_exists
SELECT EXISTS (SELECT 1 FROM variables WHERE workspace_id = $1 AND path = $2);

-- name: lock_secrets
-- Every secret of a workspace, locked for a rotation.
SELECT path, value
FROM variables
WHERE workspace_id = $1 AND is_secret
ORDER BY path
FOR UPDATE;

-- name: set_secret_values
-- Batch: $2 paths, $3 their new ciphertexts. edited_at is left alone: the value is the same.
UPDATE variables AS v
SET value = u.value
FROM unnest($2::text[], $3::text[]) AS u(path, value)
WHERE v.workspace_id = $1 AND v.path = u.path AND v.is_secret;

-- name: lock_http_trigger_secrets
-- Every HTTP route signature secret of a workspace, locked for a rotation.
SELECT path, signature_secret AS value
FROM http_triggers
WHERE workspace_id = $1 AND signature_secret IS NOT NULL
ORDER BY path
FOR UPDATE;

-- name: set_http_trigger_secrets
-- Batch: $2 trigger paths, $3 their new ciphertexts.
UPDATE http_triggers AS t
SET signature_secret = u.value
FROM unnest($2::text[], $3::text[]) AS u(path, value)
WHERE t.workspace_id = $1 AND t.path = u.path;

-- name: get_workspace_keys
SELECT keys::text AS keys, version FROM workspace_keys WHERE workspace_id = $1;

-- name: lock_workspace_keys_shared
-- Writers of secrets: a rotation (FOR UPDATE) waits for them, and they for it.
SELECT keys::text AS keys, version FROM workspace_keys WHERE workspace_id = $1 FOR SHARE;

-- name: lock_workspace_keys
SELECT keys::text AS keys, version FROM workspace_keys WHERE workspace_id = $1 FOR UPDATE;

-- name: insert_workspace_keys
INSERT INTO workspace_keys (workspace_id, keys)
VALUES ($1, $2::text::jsonb)
ON CONFLICT (workspace_id) DO NOTHING;

-- name: update_workspace_keys
UPDATE workspace_keys
SET keys = $2::text::jsonb, version = version + 1, updated_at = now()
WHERE workspace_id = $1
RETURNING version;

-- name: list_keyed_workspaces
SELECT workspace_id FROM workspace_keys ORDER BY workspace_id;
