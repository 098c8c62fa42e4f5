-- Named queries of the job queue (gristmill.common.queue).

-- name: insert_jobs
-- Batch insert; idempotent on job id and on (workspace, idempotency key).
WITH input AS (
    SELECT *
    FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::jsonb[], $10::jsonb[], $11::text[], $12::smallint[], $13::text[],
        $14::text[], $15::text[], $16::text[], $17::uuid[], $18::uuid[], $19::text[],
        $20::float8[], $21::jsonb[], $22::text[], $23::int[], $24::jsonb[], $25::timestamptz[]
    ) AS t(
        id, workspace_id, kind, runnable_path, runnable_hash, language, code,
        lock, flow_value, args, tag, priority, created_by,
        trigger_kind, trigger_source, idempotency_key, parent_job, root_job, flow_step,
        timeout_s, retry, concurrency_key, concurrency_limit, meta, scheduled_for
    )
), inserted AS (
    INSERT INTO jobs (
        id, workspace_id, kind, runnable_path, runnable_hash, language, code,
        lock, flow_value, args, tag, priority, created_by,
        trigger_kind, trigger_source, idempotency_key, parent_job, root_job, flow_step,
        timeout_s, retry, concurrency_key, concurrency_limit, meta, scheduled_for
    )
    SELECT
        id, workspace_id, kind, runnable_path, runnable_hash, language, code,
        lock, flow_value, args, tag, priority, created_by,
        trigger_kind, trigger_source, idempotency_key, parent_job, root_job, flow_step,
        timeout_s, retry, concurrency_key, concurrency_limit, meta,
        COALESCE(scheduled_for, now())
    FROM input
    ON CONFLICT DO NOTHING
    RETURNING id, workspace_id, tag, priority, scheduled_for, concurrency_key, concurrency_limit
)
INSERT INTO job_queue (
    id, workspace_id, tag, priority, scheduled_for, concurrency_key, concurrency_limit
)
SELECT id, workspace_id, tag, priority, scheduled_for, concurrency_key, concurrency_limit
FROM inserted
RETURNING id, tag, scheduled_for;

-- name: notify_tags
SELECT pg_notify('gristmill_jobs', tag) FROM unnest($1::text[]) AS t(tag);

-- name: claim
-- One index scan per tag, each in claim order (tag, priority DESC, scheduled_for, id)
-- and stopping after $2 rows, then the best $2 overall: the cost does not grow with
-- the backlog. (A plain `tag = ANY($1)` makes the planner read and sort every
-- claimable row.)
WITH candidates AS (
    SELECT c.id, c.priority, c.scheduled_for
    FROM unnest($1::text[]) AS t(tag)
    CROSS JOIN LATERAL (
        SELECT q.id, q.priority, q.scheduled_for
        FROM job_queue q
        WHERE NOT q.running
          AND q.tag = t.tag
          AND q.scheduled_for <= now()
          AND (
              q.concurrency_key IS NULL
              OR NOT EXISTS (
                  SELECT 1 FROM concurrency_slots s
                  WHERE s.key = q.concurrency_key AND s.running >= q.concurrency_limit
              )
          )
        ORDER BY q.priority DESC, q.scheduled_for, q.id
        LIMIT $2
        FOR UPDATE OF q SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.scheduled_for, c.id
    LIMIT $2
), claimed AS (
    UPDATE job_queue q
    SET running = true, worker = $3, started_at = now(), attempt = q.attempt + 1
    FROM candidates c
    WHERE q.id = c.id
    RETURNING q.id, q.attempt, q.restarts, q.started_at, q.concurrency_key, q.concurrency_limit
), runtime AS (
    INSERT INTO job_runtime (id) SELECT id FROM claimed
    ON CONFLICT (id) DO UPDATE SET ping = now(), memory_peak_kb = NULL
)
SELECT
    c.id, c.attempt, c.restarts, c.started_at, c.concurrency_key, c.concurrency_limit,
    j.workspace_id, j.kind, j.runnable_path, j.runnable_hash, j.language, j.code, j.lock,
    j.flow_value, j.args, j.tag, j.priority, j.created_by, j.trigger_kind, j.trigger_source,
    j.parent_job, j.root_job, j.flow_step, j.timeout_s, j.retry, j.meta, j.created_at
FROM claimed c
JOIN jobs j ON j.id = c.id
ORDER BY j.priority DESC, j.scheduled_for, j.id;

-- name: acquire_slot
INSERT INTO concurrency_slots AS s (key, running) VALUES ($1, 1)
ON CONFLICT (key) DO UPDATE SET running = s.running + 1 WHERE s.running < $2
RETURNING running;

-- name: release_slot
-- Give back a slot taken in this transaction (the run may not start: time window).
UPDATE concurrency_slots SET running = running - 1 WHERE key = $1 AND running > 0;

-- name: window_starts
-- Runs of key $1 that started within the last $2 seconds, and when the oldest of them
-- leaves the window. Older starts are forgotten on the way.
WITH forgotten AS (
    DELETE FROM concurrency_starts
    WHERE key = $1 AND started_at <= now() - make_interval(secs => $2::float8)
)
SELECT count(*) AS started, min(started_at) + make_interval(secs => $2::float8) AS free_at
FROM concurrency_starts
WHERE key = $1 AND started_at > now() - make_interval(secs => $2::float8);

-- name: record_start
INSERT INTO concurrency_starts (key, job_id, started_at) VALUES ($1, $2, now())
ON CONFLICT DO NOTHING;

-- name: defer
-- Give back a claim (same transaction as the claim) and make it claimable at $2.
WITH q AS (
    UPDATE job_queue
    SET running = false, worker = NULL, started_at = NULL, attempt = attempt - 1,
        scheduled_for = GREATEST($2::timestamptz, now())
    WHERE id = $1
    RETURNING id
)
DELETE FROM job_runtime r USING q WHERE r.id = q.id;

-- name: unclaim
-- Give back a claim that could not get its concurrency slot (same transaction as the claim).
WITH q AS (
    UPDATE job_queue
    SET running = false, worker = NULL, started_at = NULL, attempt = attempt - 1
    WHERE id = $1
    RETURNING id
)
DELETE FROM job_runtime r USING q WHERE r.id = q.id;

-- name: finish
-- End a job this worker holds (guarded by worker and attempt): exactly once.
WITH done AS (
    DELETE FROM job_queue
    WHERE id = $1 AND running AND worker = $2 AND attempt = $3
    RETURNING id, workspace_id, started_at, attempt, worker, concurrency_key, canceled_by
), slot AS (
    UPDATE concurrency_slots s SET running = s.running - 1
    FROM done WHERE s.key = done.concurrency_key
), job_tokens AS (
    DELETE FROM tokens t USING done WHERE t.job_id = done.id
)
INSERT INTO jobs_completed (
    id, workspace_id, status, result, error, exit_reason, started_at, completed_at,
    duration_ms, attempt, worker, canceled_by, memory_peak_kb
)
SELECT
    id, workspace_id, $4, $5, $6, $7, started_at, now(),
    COALESCE($8, (extract(epoch FROM now() - started_at) * 1000)::int),
    attempt, worker, canceled_by, $9
FROM done
ON CONFLICT (id) DO NOTHING
RETURNING id, completed_at;

-- name: finish_many
-- ``finish`` (success) for many jobs in one statement: $1 ids, $2 workers, $3
-- attempts, $4 results as JSON text, $5 durations (NULL: measured here), $6 memory peaks. Answers
-- the ids it ended; a job whose lease was lost is left out.
WITH input AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[], $6::int[])
        AS x(id, worker, attempt, result, duration_ms, memory_peak_kb)
), done AS (
    DELETE FROM job_queue q
    USING input i
    WHERE q.id = i.id AND q.running AND q.worker = i.worker AND q.attempt = i.attempt
    RETURNING q.id, q.workspace_id, q.started_at, q.attempt, q.worker, q.concurrency_key,
              q.canceled_by
), slot AS (
    UPDATE concurrency_slots s SET running = s.running - k.n
    FROM (
        SELECT concurrency_key, count(*)::int AS n
        FROM done WHERE concurrency_key IS NOT NULL
        GROUP BY concurrency_key
    ) AS k
    WHERE s.key = k.concurrency_key
), job_tokens AS (
    DELETE FROM tokens t USING done WHERE t.job_id = done.id
)
INSERT INTO jobs_completed (
    id, workspace_id, status, result, error, exit_reason, started_at, completed_at,
    duration_ms, attempt, worker, canceled_by, memory_peak_kb
)
SELECT
    d.id, d.workspace_id, 'success', i.result::jsonb, NULL, 'ok', d.started_at, now(),
    COALESCE(i.duration_ms, (extract(epoch FROM now() - d.started_at) * 1000)::int),
    d.attempt, d.worker, d.canceled_by, i.memory_peak_kb
FROM done d JOIN input i ON i.id = d.id
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: finish_child
-- ``finish`` for a job that has a parent (a flow step): also answers what the
-- child-finished hook needs, in the same statement.
WITH done AS (
    DELETE FROM job_queue
    WHERE id = $1 AND running AND worker = $2 AND attempt = $3
    RETURNING id, workspace_id, started_at, attempt, worker, concurrency_key, canceled_by
), slot AS (
    UPDATE concurrency_slots s SET running = s.running - 1
    FROM done WHERE s.key = done.concurrency_key
), job_tokens AS (
    DELETE FROM tokens t USING done WHERE t.job_id = done.id
), ins AS (
    INSERT INTO jobs_completed (
        id, workspace_id, status, result, error, exit_reason, started_at, completed_at,
        duration_ms, attempt, worker, canceled_by, memory_peak_kb
    )
    SELECT
        id, workspace_id, $4, $5, $6, $7, started_at, now(),
        COALESCE($8, (extract(epoch FROM now() - started_at) * 1000)::int),
        attempt, worker, canceled_by, $9
    FROM done
    ON CONFLICT (id) DO NOTHING
    RETURNING id, completed_at
)
SELECT ins.id, ins.completed_at, j.workspace_id, j.parent_job, j.flow_step
FROM ins JOIN jobs j ON j.id = ins.id;

-- name: finish_forced
-- End a job whatever worker holds it (zombie, timeout, cancel of a queued job).
-- Answers the job's parent and step too, for the child-finished hook.
WITH done AS (
    DELETE FROM job_queue
    WHERE id = $1 AND attempt = $2
    RETURNING id, workspace_id, started_at, attempt, worker, running, concurrency_key,
              canceled_by
), slot AS (
    UPDATE concurrency_slots s SET running = s.running - 1
    FROM done WHERE s.key = done.concurrency_key AND done.running
), job_tokens AS (
    DELETE FROM tokens t USING done WHERE t.job_id = done.id
), ins AS (
    INSERT INTO jobs_completed (
        id, workspace_id, status, result, error, exit_reason, started_at, completed_at,
        duration_ms, attempt, worker, canceled_by
    )
    SELECT
        id, workspace_id, $3, NULL, $4, $5, started_at, now(),
        (extract(epoch FROM now() - started_at) * 1000)::int, attempt, worker,
        COALESCE(canceled_by, $6)
    FROM done
    ON CONFLICT (id) DO NOTHING
    RETURNING id, completed_at
)
SELECT ins.id, ins.completed_at, j.workspace_id, j.parent_job, j.flow_step
FROM ins JOIN jobs j ON j.id = ins.id;

-- name: requeue
-- Put a running job back after a failure; it runs again at scheduled_for.
WITH q AS (
    UPDATE job_queue
    SET running = false, worker = NULL, started_at = NULL,
        scheduled_for = now() + make_interval(secs => $4::float8),
        restarts = restarts + $5::int
    WHERE id = $1 AND running AND worker = $2 AND attempt = $3 AND NOT cancel_requested
    RETURNING id, concurrency_key
), runtime AS (
    DELETE FROM job_runtime r USING q WHERE r.id = q.id
), slot AS (
    UPDATE concurrency_slots s SET running = s.running - 1
    FROM q WHERE s.key = q.concurrency_key
), job_tokens AS (
    DELETE FROM tokens t USING q WHERE t.job_id = q.id
)
SELECT id FROM q;

-- name: heartbeat
-- Refresh the pings of this worker's jobs; return those it must stop
-- (cancel requested, or no longer its own).
WITH pinged AS (
    UPDATE job_runtime r SET ping = now()
    FROM job_queue q
    WHERE r.id = ANY($1::uuid[]) AND q.id = r.id AND q.running AND q.worker = $2
    RETURNING r.id
)
SELECT u.id, COALESCE(q.cancel_requested, false) AS cancel_requested
FROM unnest($1::uuid[]) AS u(id)
LEFT JOIN job_queue q ON q.id = u.id
WHERE q.id IS NULL OR q.cancel_requested OR NOT q.running OR q.worker IS DISTINCT FROM $2;

-- name: lock_queued
SELECT id, running, worker, attempt, cancel_requested
FROM job_queue WHERE id = $1 FOR UPDATE;

-- name: request_cancel
UPDATE job_queue
SET cancel_requested = true, canceled_by = $2, cancel_reason = $3
WHERE id = $1;

-- name: find_zombies
-- Parked jobs (worker $3) have no job_runtime row and are excluded twice over: no
-- worker holds them, the jobs they wait for are recovered on their own.
SELECT q.id, q.worker, q.attempt, q.restarts, q.cancel_requested, q.canceled_by,
       q.cancel_reason, r.ping
FROM job_queue q
JOIN job_runtime r ON r.id = q.id
WHERE q.running AND q.worker IS DISTINCT FROM $3
  AND r.ping < now() - make_interval(secs => $1::float8)
ORDER BY r.ping
LIMIT $2
FOR UPDATE OF q SKIP LOCKED;

-- name: requeue_zombie
WITH q AS (
    UPDATE job_queue
    SET running = false, worker = NULL, started_at = NULL, scheduled_for = now(),
        restarts = restarts + 1
    WHERE id = $1 AND attempt = $2 AND running
    RETURNING id, concurrency_key
), runtime AS (
    DELETE FROM job_runtime r USING q WHERE r.id = q.id
), slot AS (
    UPDATE concurrency_slots s SET running = s.running - 1
    FROM q WHERE s.key = q.concurrency_key
), job_tokens AS (
    DELETE FROM tokens t USING q WHERE t.job_id = q.id
)
SELECT id FROM q;

-- name: find_timed_out
SELECT q.id, q.attempt, j.timeout_s
FROM job_queue q
JOIN jobs j ON j.id = q.id
WHERE q.running
  AND j.timeout_s IS NOT NULL
  AND q.started_at < now() - make_interval(secs => j.timeout_s + $1::float8)
LIMIT $2
FOR UPDATE OF q SKIP LOCKED;

-- name: purge_completed
WITH old AS (
    SELECT id FROM jobs_completed
    WHERE completed_at < now() - make_interval(secs => $1::float8)
    ORDER BY completed_at
    LIMIT $2
), logs AS (
    DELETE FROM job_logs l USING old WHERE l.job_id = old.id
)
DELETE FROM jobs j USING old WHERE j.id = old.id
RETURNING j.id;

-- name: append_log
INSERT INTO job_logs (job_id, seq, chunk)
VALUES ($1, COALESCE((SELECT max(seq) + 1 FROM job_logs WHERE job_id = $1), 0), $2);

-- name: read_logs
SELECT seq, chunk FROM job_logs WHERE job_id = $1 AND seq >= $2 ORDER BY seq;

-- name: job_state
SELECT
    j.id, j.workspace_id, j.kind, j.runnable_path, j.runnable_hash, j.language, j.args,
    j.tag, j.priority, j.created_by, j.trigger_kind, j.trigger_source, j.parent_job,
    j.root_job, j.flow_step, j.created_at, j.scheduled_for,
    q.running, q.worker AS queue_worker, q.started_at AS queue_started_at,
    q.attempt AS queue_attempt, q.cancel_requested,
    c.status, c.result, c.error, c.exit_reason, c.started_at AS completed_started_at,
    c.completed_at, c.duration_ms, c.attempt AS completed_attempt, c.worker AS completed_worker,
    c.canceled_by, c.memory_peak_kb
FROM jobs j
LEFT JOIN job_queue q ON q.id = j.id
LEFT JOIN jobs_completed c ON c.id = j.id
WHERE j.id = $1 AND j.workspace_id = $2;

-- name: insert_dead_letter
INSERT INTO dead_letters (source, partition, "offset", key, payload, error)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT DO NOTHING;

-- name: insert_failed_job
-- A request that was understood but cannot run (unknown script, bad args, ...):
-- recorded as a failed job so that whoever holds its id sees why.
WITH j AS (
    INSERT INTO jobs (
        id, workspace_id, kind, runnable_path, args, tag, priority, created_by,
        trigger_kind, trigger_source, idempotency_key, parent_job, root_job, flow_step,
        scheduled_for
    )
    VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, $11, $12, $13, now())
    ON CONFLICT DO NOTHING
    RETURNING id, workspace_id
)
INSERT INTO jobs_completed (id, workspace_id, status, error, exit_reason, duration_ms)
SELECT id, workspace_id, 'failure', $14, 'error', 0 FROM j
ON CONFLICT (id) DO NOTHING;

-- Parked jobs: running, held by no worker (worker = the parked marker, no job_runtime
-- row), ended by whoever drives them (the flow engine, when their children end).

-- name: park
-- A claimed job becomes parked (guarded by the claim's worker and attempt).
WITH q AS (
    UPDATE job_queue SET worker = $4
    WHERE id = $1 AND running AND worker = $2 AND attempt = $3
    RETURNING id
), runtime AS (
    DELETE FROM job_runtime r USING q WHERE r.id = q.id
)
SELECT id FROM q;

-- name: park_new
-- Jobs just inserted (same transaction) start parked.
UPDATE job_queue
SET running = true, worker = $2, started_at = now(), attempt = 1
WHERE id = ANY($1::uuid[]) AND NOT running;

-- name: unpark_at
-- A parked job becomes claimable again at now() + $3 seconds (a timer: sleeps,
-- approval timeouts). Its concurrency slot is given back until it is claimed.
WITH q AS (
    UPDATE job_queue
    SET running = false, worker = NULL,
        scheduled_for = now() + make_interval(secs => $3::float8)
    WHERE id = $1 AND running AND worker = $2
    RETURNING id, concurrency_key
), slot AS (
    UPDATE concurrency_slots s SET running = s.running - 1
    FROM q WHERE s.key = q.concurrency_key
)
SELECT id FROM q;

-- name: repark
-- Park a job again whether it waits for its timer or a worker just claimed it
-- (that worker's lease is void: its guarded writes find nothing).
WITH prev AS (
    SELECT id, running, concurrency_key FROM job_queue WHERE id = $1 FOR UPDATE
), q AS (
    UPDATE job_queue j
    SET running = true, worker = $2, started_at = COALESCE(j.started_at, now())
    FROM prev WHERE j.id = prev.id AND j.worker IS DISTINCT FROM $2
    RETURNING j.id
), slot AS (
    INSERT INTO concurrency_slots AS s (key, running)
    SELECT prev.concurrency_key, 1 FROM prev
    WHERE NOT prev.running AND prev.concurrency_key IS NOT NULL
    ON CONFLICT (key) DO UPDATE SET running = s.running + 1
), runtime AS (
    DELETE FROM job_runtime r USING q WHERE r.id = q.id
)
SELECT id FROM prev;

-- name: finish_parked
-- End a parked job (guarded: it must still be parked).
WITH done AS (
    DELETE FROM job_queue
    WHERE id = $1 AND running AND worker = $2
    RETURNING id, workspace_id, started_at, attempt, concurrency_key, canceled_by
), slot AS (
    UPDATE concurrency_slots s SET running = s.running - 1
    FROM done WHERE s.key = done.concurrency_key
), job_tokens AS (
    DELETE FROM tokens t USING done WHERE t.job_id = done.id
), ins AS (
    INSERT INTO jobs_completed (
        id, workspace_id, status, result, error, exit_reason, started_at, completed_at,
        duration_ms, attempt, worker, canceled_by
    )
    SELECT
        id, workspace_id, $3, $4, $5, $6, started_at, now(),
        COALESCE($7, (extract(epoch FROM now() - started_at) * 1000)::int),
        attempt, NULL, COALESCE(canceled_by, $8)
    FROM done
    ON CONFLICT (id) DO NOTHING
    RETURNING id, completed_at
)
SELECT ins.id, ins.completed_at, j.workspace_id, j.parent_job, j.flow_step
FROM ins JOIN jobs j ON j.id = ins.id;

-- name: lock_descendants
-- Every job still queued, running or parked below $1 (children, their children...).
WITH RECURSIVE tree AS (
    SELECT j.id FROM jobs j JOIN job_queue q ON q.id = j.id WHERE j.parent_job = $1
    UNION ALL
    SELECT j.id FROM jobs j JOIN tree t ON j.parent_job = t.id JOIN job_queue q ON q.id = j.id
)
SELECT q.id, q.running, q.worker, q.attempt
FROM job_queue q JOIN tree t ON t.id = q.id
ORDER BY q.id
FOR UPDATE OF q;

-- Jobs pinned to one worker (tag ``worker:<id>``, which every worker claims besides
-- its own tags): the definition keeps its tag (``jobs.tag``), the claimable row
-- carries the pin.

-- name: retag
-- Give unclaimed jobs another claim tag.
UPDATE job_queue SET tag = $2
WHERE id = ANY($1::uuid[]) AND NOT running AND tag <> $2
RETURNING id;

-- name: hand_over
-- Give back a claim that belongs to another worker (same as no claim: the attempt is
-- not counted), under that worker's tag.
WITH q AS (
    UPDATE job_queue
    SET running = false, worker = NULL, started_at = NULL, attempt = attempt - 1, tag = $4
    WHERE id = $1 AND running AND worker = $2 AND attempt = $3 AND NOT cancel_requested
    RETURNING id, concurrency_key
), runtime AS (
    DELETE FROM job_runtime r USING q WHERE r.id = q.id
), slot AS (
    UPDATE concurrency_slots s SET running = s.running - 1
    FROM q WHERE s.key = q.concurrency_key
), job_tokens AS (
    DELETE FROM tokens t USING q WHERE t.job_id = q.id
)
SELECT id FROM q;

-- name: unpin
-- Unclaimed jobs pinned to a worker that is gone go back to their own tag.
UPDATE job_queue q SET tag = j.tag
FROM jobs j
WHERE q.tag = $1 AND NOT q.running AND j.id = q.id
RETURNING q.id, j.tag;

-- name: pinned_workers
-- The workers that unclaimed jobs are pinned to (a small partial index holds them).
SELECT DISTINCT substr(tag, 8) AS worker
FROM job_queue
WHERE NOT running AND starts_with(tag, 'worker:');

-- name: worker_alive
-- Whether worker $1 pinged within $2 seconds (a worker that stopped removed its row).
SELECT EXISTS (
    SELECT 1 FROM workers
    WHERE id = $1 AND last_ping > now() - make_interval(secs => $2::float8)
);
