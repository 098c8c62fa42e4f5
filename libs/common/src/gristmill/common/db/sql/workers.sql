-- Named queries of the workers table: what workers write about themselves
-- (gristmill.worker.service) and what the gateway shows of them
-- (gristmill.gateway.routes.workers).

-- name: register
-- A worker starting: its row, or a fresh ping if the row is already there.
INSERT INTO workers (id, worker_group, tags, hostname, version, sandbox, memory_kb)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET last_ping = now(), memory_kb = EXCLUDED.memory_kb;

-- name: heartbeat
-- A worker's periodic ping; recreates the row if it was removed meanwhile.
INSERT INTO workers (id, worker_group, tags, hostname, current_job, jobs_done, memory_kb)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE
SET last_ping = now(), current_job = $5, jobs_done = $6, memory_kb = $7;

-- name: list_workers
-- Workers that pinged within $1 seconds (all when NULL), most recently started first.
-- A crashed worker's row stays until it ages out of such a window.
SELECT
    w.id, w.worker_group, w.tags, w.hostname, w.started_at, w.last_ping,
    extract(epoch FROM now() - w.last_ping)::float8 AS last_ping_s,
    w.current_job, j.workspace_id AS current_job_workspace_id,
    w.jobs_done, w.memory_kb, w.sandbox, w.version
FROM workers w
LEFT JOIN jobs j ON j.id = w.current_job
WHERE $1::float8 IS NULL OR w.last_ping > now() - make_interval(secs => $1::float8)
ORDER BY w.started_at DESC, w.id
LIMIT $2 OFFSET $3;

-- name: exists_worker_with_tag
-- Whether a worker that pinged within $2 seconds (any when NULL) claims tag $1.
SELECT EXISTS (
    SELECT 1 FROM workers
    WHERE $1::text = ANY (tags)
      AND ($2::float8 IS NULL OR last_ping > now() - make_interval(secs => $2::float8))
);

-- name: queue_counts
-- Jobs waiting for a worker (due, not running), per tag.
SELECT tag, count(*) AS waiting
FROM job_queue
WHERE NOT running AND scheduled_for <= now()
GROUP BY tag
ORDER BY tag;

-- name: insecure_workers
-- Live workers (pinged in the last minute) that run jobs without a sandbox.
SELECT count(*) FROM workers
WHERE last_ping > now() - interval '60 seconds' AND sandbox LIKE 'none%';
