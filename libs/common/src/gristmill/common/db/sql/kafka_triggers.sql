-- Named queries of Kafka triggers (gristmill.common.kafka_triggers).

-- name: insert
INSERT INTO kafka_triggers (
    workspace_id, path, kafka_resource_path, group_id, topics, script_path, is_flow,
    auto_offset_reset, enabled, email, edited_by, edited_at
)
VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9,
    COALESCE((SELECT email FROM users WHERE id = $10), $10), $10, now()
)
ON CONFLICT (workspace_id, path) DO NOTHING
RETURNING *;

-- name: update
-- $2 is the current path, $3 the new one; a change clears the consumer's last error.
UPDATE kafka_triggers SET
    path = $3, kafka_resource_path = $4, group_id = $5, topics = $6, script_path = $7,
    is_flow = $8, auto_offset_reset = $9, enabled = COALESCE($10, enabled),
    email = COALESCE((SELECT email FROM users WHERE id = $11), $11), edited_by = $11,
    edited_at = now(), error = NULL, error_at = NULL
WHERE workspace_id = $1 AND path = $2
RETURNING *;

-- name: get
SELECT * FROM kafka_triggers WHERE workspace_id = $1 AND path = $2;

-- name: exists
SELECT EXISTS (SELECT 1 FROM kafka_triggers WHERE workspace_id = $1 AND path = $2);

-- name: list
SELECT * FROM kafka_triggers WHERE workspace_id = $1 ORDER BY path;

-- name: delete
DELETE FROM kafka_triggers WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: set_enabled
UPDATE kafka_triggers SET enabled = $3, error = NULL, error_at = NULL
WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: resource_value
SELECT value FROM resources WHERE workspace_id = $1 AND path = $2;

-- name: enabled_with_resources
-- What the triggers service runs: every enabled trigger, with its resource's stored value.
SELECT t.*, r.value AS resource_value, r.path IS NOT NULL AS resource_found
FROM kafka_triggers t
LEFT JOIN resources r ON r.workspace_id = t.workspace_id AND r.path = t.kafka_resource_path
WHERE t.enabled
ORDER BY t.workspace_id, t.path;

-- name: set_error
-- The consumer's state; edited_at untouched and no notification (not a change of config).
-- error_at is when the current error first appeared (kept while the same error repeats).
UPDATE kafka_triggers SET
    error = $3,
    error_at = CASE
        WHEN $3::text IS NULL THEN NULL
        WHEN error IS NOT DISTINCT FROM $3::text AND error_at IS NOT NULL THEN error_at
        ELSE now()
    END,
    server_id = $4, last_server_ping = now()
WHERE workspace_id = $1 AND path = $2 AND enabled;

-- name: park
INSERT INTO kafka_trigger_parked (
    workspace_id, trigger_path, topic, "partition", "offset", key, value, headers, error
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (workspace_id, trigger_path, topic, "partition", "offset") DO NOTHING;

-- name: list_parked
SELECT * FROM kafka_trigger_parked
WHERE workspace_id = $1 AND trigger_path = $2
ORDER BY id DESC
LIMIT $3 OFFSET $4;

-- name: delete_parked
DELETE FROM kafka_trigger_parked WHERE workspace_id = $1 AND trigger_path = $2;
