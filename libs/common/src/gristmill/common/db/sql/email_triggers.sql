-- Named queries of email triggers (gristmill.common.email_triggers).

-- name: insert
INSERT INTO email_triggers (
    workspace_id, path, local_part, workspaced_local_part, address, script_path, is_flow,
    enabled, email, edited_by, edited_at
)
VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8,
    COALESCE((SELECT email FROM users WHERE id = $9), $9), $9, now()
)
ON CONFLICT (workspace_id, path) DO NOTHING
RETURNING *;

-- name: update
UPDATE email_triggers SET
    local_part = $3, workspaced_local_part = $4, address = $5, script_path = $6,
    is_flow = $7, enabled = COALESCE($8, enabled),
    email = COALESCE((SELECT email FROM users WHERE id = $9), $9), edited_by = $9,
    edited_at = now()
WHERE workspace_id = $1 AND path = $2
RETURNING *;

-- name: get
SELECT * FROM email_triggers WHERE workspace_id = $1 AND path = $2;

-- name: exists
SELECT EXISTS (SELECT 1 FROM email_triggers WHERE workspace_id = $1 AND path = $2);

-- name: list
SELECT * FROM email_triggers WHERE workspace_id = $1 ORDER BY path;

-- name: delete
DELETE FROM email_triggers WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: set_enabled
UPDATE email_triggers SET enabled = $3 WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: address_owner
SELECT workspace_id, path FROM email_triggers WHERE address = $1;

-- name: by_address
-- The enabled trigger answering to a local part (lower-cased).
SELECT * FROM email_triggers WHERE address = $1 AND enabled;
