-- Named queries of cron schedules: the store (gristmill.common.schedules) and the
-- scheduler service's claims of due ticks and of settled runs.

-- name: insert
-- $3..$26: the editable columns (gristmill.common.schedules._values); $27 enabled,
-- $28 the editor (whose email the schedule keeps), $29 now, $30 the first tick.
INSERT INTO schedules (
    workspace_id, path,
    schedule, timezone, cron_version, script_path, is_flow, args, summary, description,
    tag, no_flow_overlap, catch_up, catch_up_max,
    on_failure, on_failure_times, on_failure_exact, on_failure_extra_args,
    on_recovery, on_recovery_times, on_recovery_extra_args,
    on_success, on_success_extra_args, ws_error_handler_muted, retry, paused_until,
    enabled, email, edited_by, edited_at, created_at, next_fire_at
)
VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21, $22, $23, $24, $25, $26,
    $27, COALESCE((SELECT email FROM users WHERE id = $28), $28), $28, $29, $29, $30
)
ON CONFLICT (workspace_id, path) DO NOTHING
RETURNING *;

-- name: update
-- A new setting starts afresh: next tick from now, no error, streaks kept.
UPDATE schedules SET
    schedule = $3, timezone = $4, cron_version = $5, script_path = $6, is_flow = $7,
    args = $8, summary = $9, description = $10, tag = $11, no_flow_overlap = $12,
    catch_up = $13, catch_up_max = $14,
    on_failure = $15, on_failure_times = $16, on_failure_exact = $17,
    on_failure_extra_args = $18,
    on_recovery = $19, on_recovery_times = $20, on_recovery_extra_args = $21,
    on_success = $22, on_success_extra_args = $23, ws_error_handler_muted = $24,
    retry = $25, paused_until = $26,
    edited_by = $27, edited_at = $28, next_fire_at = $29, error = NULL
WHERE workspace_id = $1 AND path = $2
RETURNING *;

-- name: set_enabled
UPDATE schedules
SET enabled = $3, edited_by = $4, edited_at = $5, next_fire_at = $6,
    error = CASE WHEN $3 THEN NULL ELSE error END
WHERE workspace_id = $1 AND path = $2
RETURNING *;

-- name: delete
DELETE FROM schedules WHERE workspace_id = $1 AND path = $2 RETURNING path;

-- name: get
SELECT * FROM schedules WHERE workspace_id = $1 AND path = $2;

-- name: exists
SELECT EXISTS (SELECT 1 FROM schedules WHERE workspace_id = $1 AND path = $2);

-- name: list
-- $2 exact path; $3 path prefix; $4 flows only / scripts only; $5 args containing;
-- $6 limit; $7 offset.
SELECT *
FROM schedules
WHERE workspace_id = $1
  AND ($2::text IS NULL OR path = $2)
  AND ($3::text IS NULL OR starts_with(path, $3))
  AND ($4::boolean IS NULL OR is_flow = $4)
  AND ($5::jsonb IS NULL OR args @> $5)
ORDER BY path
LIMIT $6 OFFSET $7;

-- name: flow_exists
SELECT EXISTS (
    SELECT 1 FROM flows WHERE workspace_id = $1 AND path = $2 AND NOT archived
);

-- name: claim_due
-- Due schedules, each taken by one replica: others skip the locked rows.
SELECT *
FROM schedules
WHERE enabled AND next_fire_at <= $1
ORDER BY next_fire_at
LIMIT $2
FOR UPDATE SKIP LOCKED;

-- name: running_fire
-- Whether a fired run of the schedule has not ended. Its job may not exist yet (on its
-- way through the bus); one still missing when fired before $3 was lost (deleted).
SELECT EXISTS (
    SELECT 1
    FROM schedule_fires f
    WHERE f.workspace_id = $1 AND f.path = $2
      AND NOT EXISTS (SELECT 1 FROM jobs_completed c WHERE c.id = f.job_id)
      AND (f.fired_at > $3 OR EXISTS (SELECT 1 FROM jobs j WHERE j.id = f.job_id))
);

-- name: record_fires
INSERT INTO schedule_fires (workspace_id, path, tick, job_id, fired_at)
SELECT $1, $2, tick, job_id, $5
FROM unnest($3::timestamptz[], $4::uuid[]) AS t(tick, job_id)
ON CONFLICT DO NOTHING;

-- name: advance
-- After a pass over a claimed schedule: its next tick, the last that fired, its error.
UPDATE schedules
SET next_fire_at = $3,
    last_fired_at = COALESCE($4, last_fired_at),
    error = $5
WHERE workspace_id = $1 AND path = $2;

-- name: claim_settled
-- Schedules whose earliest unsettled run has ended (outcomes settle in tick order), or
-- was lost: fired before $2 and its job is nowhere.
SELECT s.*
FROM schedules s
JOIN (
    SELECT DISTINCT ON (workspace_id, path) workspace_id, path, job_id, fired_at
    FROM schedule_fires
    ORDER BY workspace_id, path, tick
) AS earliest USING (workspace_id, path)
WHERE EXISTS (SELECT 1 FROM jobs_completed c WHERE c.id = earliest.job_id)
   OR (
       earliest.fired_at <= $2
       AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = earliest.job_id)
   )
LIMIT $1
FOR UPDATE OF s SKIP LOCKED;

-- name: fire_outcomes
-- A schedule's unsettled runs in tick order, with the outcome of those that ended and
-- whether their job is missing.
SELECT f.tick, f.job_id, f.fired_at, j.id IS NULL AS missing,
       c.status, c.result, c.error, c.started_at
FROM schedule_fires f
LEFT JOIN jobs j ON j.id = f.job_id
LEFT JOIN jobs_completed c ON c.id = f.job_id
WHERE f.workspace_id = $1 AND f.path = $2
ORDER BY f.tick
LIMIT $3;

-- name: settle
-- Forget settled runs and keep the streaks they left.
WITH settled AS (
    DELETE FROM schedule_fires
    WHERE workspace_id = $1 AND path = $2 AND tick = ANY($3::timestamptz[])
)
UPDATE schedules
SET failure_streak = $4, success_streak = $5, unrecovered_failure = $6
WHERE workspace_id = $1 AND path = $2;

-- name: next_due
-- When the earliest enabled schedule is due (NULL: none is).
SELECT min(next_fire_at) FROM schedules WHERE enabled;
