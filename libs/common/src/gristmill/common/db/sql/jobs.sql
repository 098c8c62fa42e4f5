-- Named queries of the jobs read API (the gateway's ``jobs_view`` module).
--
-- Reading a job joins its definition (jobs) with whichever of job_queue / job_runtime
-- (queued or running) or jobs_completed (ended) holds its state; see ADR 0003.
-- Blocks whose name ends in ``_fragment`` are not statements on their own: the
-- list endpoints compose ``job_list_fragment`` + ``job_filters_fragment`` + one scope
-- fragment + one order fragment, all constants from this file.

-- name: job_get
-- One job in full. $3: include its whole log.
SELECT
    j.id, j.workspace_id, j.kind, j.runnable_path, j.runnable_hash, j.language, j.code,
    j.flow_value, j.args, j.tag, j.priority, j.created_by, j.trigger_kind,
    j.trigger_source, j.parent_job, j.root_job, j.flow_step, j.created_at,
    COALESCE(u.email, j.created_by) AS email,
    q.id IS NOT NULL AS queued, q.running, q.scheduled_for, q.started_at AS queue_started_at,
    q.worker AS queue_worker, q.attempt AS queue_attempt, q.cancel_requested,
    q.canceled_by AS queue_canceled_by, q.cancel_reason,
    r.ping, r.memory_peak_kb AS runtime_memory_peak_kb,
    c.status, c.result, c.error, c.exit_reason, c.started_at AS completed_started_at,
    c.completed_at, c.duration_ms, c.attempt AS completed_attempt,
    c.worker AS completed_worker, c.canceled_by AS completed_canceled_by,
    c.memory_peak_kb AS completed_memory_peak_kb,
    CASE WHEN $3::bool THEN (
        SELECT string_agg(l.chunk, '' ORDER BY l.seq) FROM job_logs l WHERE l.job_id = j.id
    ) END AS logs
FROM jobs j
LEFT JOIN job_queue q ON q.id = j.id
LEFT JOIN job_runtime r ON r.id = j.id
LEFT JOIN jobs_completed c ON c.id = j.id
LEFT JOIN users u ON u.id = j.created_by
WHERE j.id = $1 AND j.workspace_id = $2;

-- name: job_list_fragment
-- The columns of ``job_get`` without code and logs (lists stay light). $1: workspace.
SELECT
    j.id, j.workspace_id, j.kind, j.runnable_path, j.runnable_hash, j.language,
    NULL::text AS code, j.flow_value, j.args, j.tag, j.priority, j.created_by,
    j.trigger_kind, j.trigger_source, j.parent_job, j.root_job, j.flow_step, j.created_at,
    COALESCE(u.email, j.created_by) AS email,
    q.id IS NOT NULL AS queued, q.running, q.scheduled_for, q.started_at AS queue_started_at,
    q.worker AS queue_worker, q.attempt AS queue_attempt, q.cancel_requested,
    q.canceled_by AS queue_canceled_by, q.cancel_reason,
    r.ping, r.memory_peak_kb AS runtime_memory_peak_kb,
    c.status, c.result, c.error, c.exit_reason, c.started_at AS completed_started_at,
    c.completed_at, c.duration_ms, c.attempt AS completed_attempt,
    c.worker AS completed_worker, c.canceled_by AS completed_canceled_by,
    c.memory_peak_kb AS completed_memory_peak_kb,
    NULL::text AS logs
FROM jobs j
LEFT JOIN job_queue q ON q.id = j.id
LEFT JOIN job_runtime r ON r.id = j.id
LEFT JOIN jobs_completed c ON c.id = j.id
LEFT JOIN users u ON u.id = j.created_by
WHERE j.workspace_id = $1

-- name: job_filters_fragment
-- Optional filters; a NULL parameter disables its filter.
  AND ($2::text IS NULL OR j.created_by = $2)
  AND ($3::text IS NULL OR j.runnable_path = $3)
  AND ($4::text IS NULL OR starts_with(j.runnable_path, $4))
  AND ($5::text IS NULL OR j.runnable_hash = $5)
  AND ($6::bool IS NULL OR (c.status = 'success') = $6)
  AND ($7::bool IS NULL OR COALESCE(q.running, false) = $7)
  AND ($8::text[] IS NULL OR j.kind = ANY($8))
  AND ($9::text IS NULL OR j.tag = $9)
  AND ($10::timestamptz IS NULL OR j.created_at <= $10)
  AND ($11::timestamptz IS NULL OR j.created_at > $11)
  AND ($12::timestamptz IS NULL OR COALESCE(c.started_at, q.started_at) <= $12)
  AND ($13::timestamptz IS NULL OR COALESCE(c.started_at, q.started_at) > $13)
  AND ($14::bool IS NULL OR (j.parent_job IS NULL) = $14)
  AND ($15::bool IS NULL OR NOT $15)
  AND ($16::bool IS NULL OR (j.flow_step IS NOT NULL) = $16)
  AND ($17::uuid IS NULL OR j.parent_job = $17)
  AND ($18::text IS NULL OR j.trigger_kind = $18)
  AND ($19::jsonb IS NULL OR j.args @> $19)
  AND ($20::jsonb IS NULL OR c.result @> $20)
  AND ($21::bool IS NULL OR (j.trigger_kind = 'schedule') <> $21)
  AND ($22::bool IS NULL OR (q.scheduled_for <= now()) = $22)

-- name: scope_all_fragment
-- Every job, newest first by creation (an index on jobs.created_at serves the order).
ORDER BY j.created_at DESC, j.id DESC
LIMIT $23 OFFSET $24

-- name: scope_all_asc_fragment
ORDER BY j.created_at, j.id
LIMIT $23 OFFSET $24

-- name: scope_completed_fragment
-- Ended jobs, latest completion first (index jobs_completed_workspace_idx).
  AND c.workspace_id = $1
ORDER BY c.completed_at DESC, c.id DESC
LIMIT $23 OFFSET $24

-- name: scope_completed_asc_fragment
  AND c.workspace_id = $1
ORDER BY c.completed_at, c.id
LIMIT $23 OFFSET $24

-- name: scope_queued_fragment
-- Queued and running jobs (job_queue is small: it holds only live jobs).
  AND q.workspace_id = $1
ORDER BY j.created_at DESC, j.id DESC
LIMIT $23 OFFSET $24

-- name: scope_queued_asc_fragment
  AND q.workspace_id = $1
ORDER BY j.created_at, j.id
LIMIT $23 OFFSET $24

-- name: job_update
-- State and the log from character $3 on (0-based; a chunk may be cut in the middle).
-- One statement, so the logs and the completion come from one snapshot: a job seen
-- completed has all its logs here. ``log_end`` is the log's length in characters.
SELECT
    q.running, c.status, j.kind,
    COALESCE(r.memory_peak_kb, c.memory_peak_kb) AS mem_peak,
    l.new_logs, l.log_end, l.last_seq
FROM jobs j
LEFT JOIN job_queue q ON q.id = j.id
LEFT JOIN job_runtime r ON r.id = j.id
LEFT JOIN jobs_completed c ON c.id = j.id
CROSS JOIN LATERAL (
    SELECT
        COALESCE(
            string_agg(
                CASE WHEN s.upto - s.len < $3::bigint
                     THEN substr(s.chunk, ($3::bigint - (s.upto - s.len) + 1)::int)
                     ELSE s.chunk END,
                '' ORDER BY s.seq
            ) FILTER (WHERE s.upto > $3::bigint),
            ''
        ) AS new_logs,
        COALESCE(max(s.upto), 0)::bigint AS log_end,
        max(s.seq) AS last_seq
    FROM (
        SELECT seq, chunk, char_length(chunk) AS len,
               sum(char_length(chunk)) OVER (ORDER BY seq) AS upto
        FROM job_logs
        WHERE job_id = j.id
    ) s
) l
WHERE j.id = $1 AND j.workspace_id = $2;

-- name: job_update_after_seq
-- State and the log chunks after chunk $3 (a stream that already knows its position).
SELECT
    q.running, c.status, j.kind,
    COALESCE(r.memory_peak_kb, c.memory_peak_kb) AS mem_peak,
    l.new_logs, l.last_seq
FROM jobs j
LEFT JOIN job_queue q ON q.id = j.id
LEFT JOIN job_runtime r ON r.id = j.id
LEFT JOIN jobs_completed c ON c.id = j.id
CROSS JOIN LATERAL (
    SELECT COALESCE(string_agg(chunk, '' ORDER BY seq), '') AS new_logs, max(seq) AS last_seq
    FROM job_logs
    WHERE job_id = j.id AND seq > $3
) l
WHERE j.id = $1 AND j.workspace_id = $2;

-- name: job_logs
-- The whole log of a job (NULL when it has none); no row when the job is unknown.
SELECT (
    SELECT string_agg(l.chunk, '' ORDER BY l.seq) FROM job_logs l WHERE l.job_id = j.id
) AS logs
FROM jobs j
WHERE j.id = $1 AND j.workspace_id = $2;

-- name: job_outcome
SELECT j.args, q.id IS NOT NULL AS queued, q.running, c.status, c.result, c.error
FROM jobs j
LEFT JOIN job_queue q ON q.id = j.id
LEFT JOIN jobs_completed c ON c.id = j.id
WHERE j.id = $1 AND j.workspace_id = $2;

-- name: job_root
-- The job at the root of a flow hierarchy (itself when it is not a flow step).
SELECT COALESCE(root_job, parent_job, id) AS root
FROM jobs
WHERE id = $1 AND workspace_id = $2;

-- name: completed_count
SELECT count(*) FROM jobs_completed WHERE workspace_id = $1;

-- name: queue_count
SELECT count(*) FROM job_queue WHERE workspace_id = $1;
