-- Named queries of HTTP routes (gristmill.common.http_triggers).

-- name: insert
INSERT INTO http_triggers (
    workspace_id, path, route_path, route_key, segments, http_method, script_path,
    is_flow, is_async, authentication_method, signature_secret, enabled,
    email, edited_by, edited_at, workspaced_route, wrap_body, raw_string
)
VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
    COALESCE((SELECT email FROM users WHERE id = $13), $13), $13, now(), $14, $15, $16
)
ON CONFLICT (workspace_id, path) DO NOTHING
RETURNING *;

-- name: update
UPDATE http_triggers SET
    route_path = $3, route_key = $4, segments = $5, http_method = $6, script_path = $7,
    is_flow = $8, is_async = $9, authentication_method = $10,
    signature_secret = COALESCE($11, signature_secret), enabled = COALESCE($12, enabled),
    email = COALESCE((SELECT email FROM users WHERE id = $13), $13), edited_by = $13,
    edited_at = now(), workspaced_route = $14, wrap_body = $15, raw_string = $16
WHERE workspace_id = $1 AND path = $2
RETURNING *;

-- name: get
SELECT * FROM http_triggers WHERE workspace_id = $1 AND path = $2;

-- name: list
SELECT * FROM http_triggers WHERE workspace_id = $1 ORDER BY path;

-- name: delete
DELETE FROM http_triggers WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: set_enabled
UPDATE http_triggers SET enabled = $3 WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: route_owner
-- The trigger (in any workspace) holding a method and route shape.
SELECT workspace_id, path FROM http_triggers WHERE http_method = $1 AND route_key = $2;

-- name: candidates
-- Enabled routes of a request's segment count, any method.
SELECT * FROM http_triggers WHERE segments = $1 AND enabled;
