-- Named queries of WebSocket triggers (gristmill.common.websocket_triggers).

-- name: insert
INSERT INTO websocket_triggers (
    workspace_id, path, url, url_runnable_args, script_path, is_flow, filters, filter_logic,
    initial_messages, can_return_message, can_return_error_result, enabled,
    email, edited_by, edited_at
)
VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
    COALESCE((SELECT email FROM users WHERE id = $13), $13), $13, now()
)
ON CONFLICT (workspace_id, path) DO NOTHING
RETURNING *;

-- name: update
-- An edit clears the last error: the trigger is connected anew with its new settings.
UPDATE websocket_triggers SET
    url = $3, url_runnable_args = $4, script_path = $5, is_flow = $6, filters = $7,
    filter_logic = $8, initial_messages = $9, can_return_message = $10,
    can_return_error_result = $11, enabled = COALESCE($12, enabled),
    email = COALESCE((SELECT email FROM users WHERE id = $13), $13), edited_by = $13,
    edited_at = now(), error = NULL, error_at = NULL
WHERE workspace_id = $1 AND path = $2
RETURNING *;

-- name: get
SELECT * FROM websocket_triggers WHERE workspace_id = $1 AND path = $2;

-- name: exists
SELECT EXISTS (SELECT 1 FROM websocket_triggers WHERE workspace_id = $1 AND path = $2);

-- name: list
SELECT * FROM websocket_triggers WHERE workspace_id = $1 ORDER BY path;

-- name: delete
DELETE FROM websocket_triggers WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: set_enabled
UPDATE websocket_triggers SET enabled = $3, error = NULL, error_at = NULL
WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: claim
-- The enabled triggers this replica ($1) connects: those it holds (the lease is renewed)
-- and those nobody holds or whose holder's lease is older than $2 seconds. A row updated
-- by another replica meanwhile is re-checked after its commit, so one replica wins.
UPDATE websocket_triggers SET server_id = $1, last_server_ping = now()
WHERE enabled
  AND (server_id IS NULL OR server_id = $1 OR last_server_ping IS NULL
       OR last_server_ping < now() - make_interval(secs => $2))
RETURNING *;

-- name: release
-- A replica stopping hands its triggers over at once.
UPDATE websocket_triggers SET server_id = NULL, last_server_ping = NULL WHERE server_id = $1;

-- name: set_error
UPDATE websocket_triggers
SET error = $4, error_at = CASE WHEN $4::text IS NULL THEN NULL ELSE now() END
WHERE workspace_id = $1 AND path = $2 AND server_id = $3;
