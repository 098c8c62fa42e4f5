-- Named queries of flows (gristmill.common.flows: store, engine, view).

-- name: flow_get
SELECT workspace_id, path, summary, description, value, schema, extra, archived, version,
       created_by, created_at, edited_by, edited_at
FROM flows WHERE workspace_id = $1 AND path = $2;

-- name: flow_create
INSERT INTO flows (
    workspace_id, path, summary, description, value, schema, extra, created_by, edited_by
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
ON CONFLICT DO NOTHING
RETURNING path;

-- name: flow_update
-- Save over a flow; $9 renames it (NULL: same path).
UPDATE flows
SET path = COALESCE($9, path), summary = $3, description = $4, value = $5, schema = $6,
    extra = $7, edited_by = $8, edited_at = now(), version = version + 1, archived = false
WHERE workspace_id = $1 AND path = $2
RETURNING path, version;

-- name: flow_archive
UPDATE flows SET archived = $3, edited_at = now()
WHERE workspace_id = $1 AND path = $2
RETURNING path;

-- name: flow_delete
DELETE FROM flows WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: flow_list
SELECT workspace_id, path, summary, description, value, schema, extra, archived, version,
       created_by, created_at, edited_by, edited_at
FROM flows
WHERE workspace_id = $1
  AND archived = $2
  AND ($3::text IS NULL OR starts_with(path, $3))
  AND ($4::text IS NULL OR created_by = $4)
ORDER BY edited_at DESC, path
LIMIT $5 OFFSET $6;

-- name: flow_exists
SELECT EXISTS (SELECT 1 FROM flows WHERE workspace_id = $1 AND path = $2);

-- name: flow_version
SELECT version FROM flows WHERE workspace_id = $1 AND path = $2;

-- name: flow_job
-- A flow job's definition, with its state (NULL before it started), optionally locked.
SELECT
    j.id, j.workspace_id, j.kind, j.runnable_path, j.flow_value, j.args, j.tag, j.priority,
    j.created_by, j.trigger_kind, j.trigger_source, j.parent_job, j.root_job, j.flow_step,
    j.meta, s.state, s.resume_secret
FROM jobs j
LEFT JOIN flow_status s ON s.id = j.id
WHERE j.id = $1;

-- name: flow_job_lock
SELECT
    j.id, j.workspace_id, j.kind, j.runnable_path, j.flow_value, j.args, j.tag, j.priority,
    j.created_by, j.trigger_kind, j.trigger_source, j.parent_job, j.root_job, j.flow_step,
    j.meta, s.state, s.resume_secret
FROM flow_status s
JOIN jobs j ON j.id = s.id
WHERE s.id = $1
FOR UPDATE OF s;

-- name: status_insert
INSERT INTO flow_status (id, root_job, state, resume_secret)
VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: status_update
UPDATE flow_status SET state = $2, updated_at = now() WHERE id = $1;

-- name: job_outcomes
SELECT c.id, c.status, c.result, c.error, c.started_at, c.completed_at, c.duration_ms
FROM jobs_completed c WHERE c.id = ANY($1::uuid[]);

-- name: children_outcomes
-- The ended children of a loop or branch-all module, in item order.
SELECT (j.meta->>'index')::int AS index, c.status, c.result, c.error
FROM jobs j
JOIN jobs_completed c ON c.id = j.id
WHERE j.parent_job = $1 AND j.flow_step = $2
ORDER BY (j.meta->>'index')::int;

-- name: children_of
-- Every child of a flow job (steps, iterations, branches), for the job view.
SELECT j.id, j.flow_step, j.kind, (j.meta->>'index')::int AS index, j.created_at,
       q.running, q.started_at AS queue_started_at,
       c.status, c.started_at, c.completed_at, c.duration_ms
FROM jobs j
LEFT JOIN job_queue q ON q.id = j.id
LEFT JOIN jobs_completed c ON c.id = j.id
WHERE j.parent_job = $1
ORDER BY j.created_at, j.id;

-- name: iterator_insert
INSERT INTO flow_iterators (flow_id, step_id, items) VALUES ($1, $2, $3)
ON CONFLICT (flow_id, step_id) DO UPDATE SET items = EXCLUDED.items;

-- name: iterator_item
SELECT items -> $3::int AS item FROM flow_iterators WHERE flow_id = $1 AND step_id = $2;

-- name: resume_events
SELECT resume_id, approved, approver, payload FROM flow_resume_events
WHERE job_id = $1 ORDER BY created_at, resume_id;

-- name: resume_insert
INSERT INTO flow_resume_events (job_id, resume_id, flow_id, approved, approver, payload)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (job_id, resume_id) DO NOTHING
RETURNING job_id;

-- name: step_job
-- A job and the flow job that runs it (for resume URLs).
SELECT j.id, j.workspace_id, j.parent_job, j.flow_step, s.resume_secret
FROM jobs j
LEFT JOIN flow_status s ON s.id = j.parent_job
WHERE j.id = $1 AND j.workspace_id = $2;

-- name: user_state_get
SELECT s.user_states -> $3 AS value, s.user_states ? $3 AS present
FROM flow_status s JOIN jobs j ON j.id = s.id
WHERE s.id = $1 AND j.workspace_id = $2;

-- name: user_state_set
UPDATE flow_status s
SET user_states = jsonb_set(s.user_states, ARRAY[$3::text], $4::jsonb, true)
FROM jobs j
WHERE s.id = $1 AND j.id = s.id AND j.workspace_id = $2
RETURNING s.id;

-- name: flow_state_of
SELECT s.state, s.user_states FROM flow_status s JOIN jobs j ON j.id = s.id
WHERE s.id = $1 AND j.workspace_id = $2;

-- name: flow_outcome
-- A flow job's end (NULL status while it runs) and its early result, if any.
SELECT j.id, c.status, c.result, c.error, s.state -> 'early_result' AS early_result,
       COALESCE(s.state ? 'early_result', false) AS has_early_result
FROM jobs j
LEFT JOIN jobs_completed c ON c.id = j.id
LEFT JOIN flow_status s ON s.id = j.id
WHERE j.id = $1 AND j.workspace_id = $2;

-- same_worker flows (gristmill.common.flows.same_worker).

-- name: pin_read
-- The worker a same_worker flow is pinned to; shared-locked against a change of pin.
SELECT worker FROM flow_status WHERE id = $1 FOR SHARE;

-- name: pin_lock
SELECT worker FROM flow_status WHERE id = $1 FOR UPDATE;

-- name: pin_set
UPDATE flow_status SET worker = $2 WHERE id = $1;

-- name: pin_queued_steps
-- The unclaimed steps of same_worker flow $1 (root $2) not yet pinned to tag $3.
SELECT q.id
FROM job_queue q
JOIN jobs j ON j.id = q.id
WHERE NOT q.running AND q.tag <> $3 AND j.root_job = $2 AND j.meta->>'same_worker' = $1::uuid::text;

-- name: pinned_workers
-- Workers that parked same_worker flows are pinned to.
SELECT DISTINCT s.worker
FROM job_queue q
JOIN flow_status s ON s.id = q.id
WHERE q.running AND q.worker = $1 AND s.worker IS NOT NULL;

-- name: pins_lost
-- Forget a lost worker's pins (their flows pin again at their next step's claim).
UPDATE flow_status s SET worker = NULL
FROM job_queue q
WHERE q.id = s.id AND s.worker = $1
RETURNING s.id;

-- name: live_flows
-- Which of the flow jobs $1 have not ended.
SELECT id FROM job_queue WHERE id = ANY($1::uuid[]);
