-- Named queries of resource types and resources (gristmill.common.resources).

-- name: insert_resource_type
-- Answers nothing when the name is taken.
INSERT INTO resource_types (workspace_id, name, schema, description, created_by)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace_id, name) DO NOTHING
RETURNING name;

-- name: get_resource_type
SELECT workspace_id, name, schema, description, created_by, created_at, edited_at
FROM resource_types
WHERE workspace_id = $1 AND name = $2;

-- name: lock_resource_type
-- Held while a value is checked against the schema, so neither changes meanwhile.
SELECT workspace_id, name, schema, description, created_by, created_at, edited_at
FROM resource_types
WHERE workspace_id = $1 AND name = $2
FOR SHARE;

-- name: list_resource_types
SELECT workspace_id, name, schema, description, created_by, created_at, edited_at
FROM resource_types
WHERE workspace_id = $1
ORDER BY name;

-- name: update_resource_type
-- $3: the new schema when $5 is true (else the schema is kept); $4: the new
-- description, kept when NULL.
UPDATE resource_types
SET schema = CASE WHEN $5::boolean THEN $3::jsonb ELSE schema END,
    description = COALESCE($4, description),
    edited_at = now()
WHERE workspace_id = $1 AND name = $2
RETURNING name;

-- name: delete_unused_resource_type
-- Deletes only a type no resource uses; answers whether it existed and how many use it.
WITH target AS (
    SELECT name FROM resource_types WHERE workspace_id = $1 AND name = $2 FOR UPDATE
), users AS (
    SELECT count(*) AS n, min(path) AS example
    FROM resources
    WHERE workspace_id = $1 AND resource_type = $2
), deleted AS (
    DELETE FROM resource_types
    WHERE workspace_id = $1 AND name = $2 AND (SELECT n FROM users) = 0
    RETURNING name
)
SELECT EXISTS (SELECT 1 FROM target) AS found,
       (SELECT n FROM users) AS used_by,
       (SELECT example FROM users) AS example,
       EXISTS (SELECT 1 FROM deleted) AS deleted;

-- name: resource_type_exists
SELECT EXISTS (SELECT 1 FROM resource_types WHERE workspace_id = $1 AND name = $2);

-- name: insert_resource
-- Answers nothing when the path is taken.
INSERT INTO resources (workspace_id, path, resource_type, value, description, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (workspace_id, path) DO NOTHING
RETURNING path;

-- name: get_resource
SELECT workspace_id, path, resource_type, value, description, created_by, created_at, edited_at
FROM resources
WHERE workspace_id = $1 AND path = $2;

-- name: get_resource_for_update
SELECT workspace_id, path, resource_type, value, description, created_by, created_at, edited_at
FROM resources
WHERE workspace_id = $1 AND path = $2
FOR UPDATE;

-- name: update_resource
-- $2: the current path, $3: the new one (the same when not renamed).
UPDATE resources
SET path = $3, resource_type = $4, value = $5, description = $6, edited_at = now()
WHERE workspace_id = $1 AND path = $2;

-- name: list_resources
-- $2: types to include (NULL: all), $3: types to exclude (NULL: none).
SELECT workspace_id, path, resource_type, value, description, created_by, created_at, edited_at
FROM resources
WHERE workspace_id = $1
  AND ($2::text[] IS NULL OR resource_type = ANY ($2::text[]))
  AND ($3::text[] IS NULL OR resource_type <> ALL ($3::text[]))
  AND ($4::text IS NULL OR starts_with(path, $4::text))
ORDER BY path
LIMIT $5 OFFSET $6;

-- name: delete_resource
DELETE FROM resources WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: resource_exists
SELECT EXISTS (SELECT 1 FROM resources WHERE workspace_id = $1 AND path = $2);
