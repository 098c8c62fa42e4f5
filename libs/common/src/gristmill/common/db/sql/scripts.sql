-- Named queries of the script registry (gristmill.common.scripts) and of waiting
-- for a run's outcome (the gateway's run_wait_result).

-- name: lock_path
-- Serialize saves at one path (held until the transaction ends).
SELECT pg_advisory_xact_lock(1735552611, hashtext($1 || '/' || $2));

-- name: head
-- The latest version at a path that was not deleted (archived or not).
SELECT hash, parent_hashes, created_at
FROM scripts
WHERE workspace_id = $1 AND path = $2 AND NOT deleted
ORDER BY created_at DESC
LIMIT 1;

-- name: insert_version
-- created_at is strictly after the previous head's, so that "latest" follows the chain.
INSERT INTO scripts (
    workspace_id, hash, path, parent_hashes, summary, description, content, language,
    kind, schema, lock, tag, is_template, extra, created_by, created_at
)
VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
    GREATEST(clock_timestamp(), $16::timestamptz + interval '1 microsecond')
)
ON CONFLICT (workspace_id, hash) DO NOTHING
RETURNING hash;

-- name: get_by_path
SELECT *
FROM scripts
WHERE workspace_id = $1 AND path = $2 AND NOT deleted
ORDER BY created_at DESC
LIMIT 1;

-- name: get_runnable_by_path
-- What running by path runs: the latest version neither archived nor deleted.
SELECT *
FROM scripts
WHERE workspace_id = $1 AND path = $2 AND NOT deleted AND NOT archived
ORDER BY created_at DESC
LIMIT 1;

-- name: get_by_hash
SELECT * FROM scripts WHERE workspace_id = $1 AND hash = $2;

-- name: list_latest
-- The latest version per path among the versions that pass the filters.
-- $2: archived versions instead of live ones; $3 path prefix; $4 exact path;
-- $5 creator; $6 kinds; $7 direct parent; $8 templates only / non-templates only;
-- $9 newest first; $10 limit; $11 offset.
SELECT *
FROM (
    SELECT DISTINCT ON (path) *
    FROM scripts
    WHERE workspace_id = $1
      AND NOT deleted
      AND archived = $2
      AND ($3::text IS NULL OR starts_with(path, $3))
      AND ($4::text IS NULL OR path = $4)
      AND ($5::text IS NULL OR created_by = $5)
      AND ($6::text[] IS NULL OR kind = ANY($6))
      AND ($7::text IS NULL OR parent_hashes[1] = $7)
      AND ($8::boolean IS NULL OR is_template = $8)
    ORDER BY path, created_at DESC
) AS latest
ORDER BY
    CASE WHEN $9 THEN created_at END DESC,
    CASE WHEN NOT $9 THEN created_at END ASC,
    path
LIMIT $10 OFFSET $11;

-- name: list_paths
SELECT DISTINCT path FROM scripts WHERE workspace_id = $1 AND NOT deleted ORDER BY path;

-- name: exists_path
SELECT EXISTS (
    SELECT 1 FROM scripts WHERE workspace_id = $1 AND path = $2 AND NOT deleted
);

-- name: archive_path
UPDATE scripts SET archived = true
WHERE workspace_id = $1 AND path = $2 AND NOT deleted
RETURNING hash;

-- name: archive_hash
UPDATE scripts SET archived = true
WHERE workspace_id = $1 AND hash = $2 AND NOT deleted
RETURNING *;

-- name: delete_path
DELETE FROM scripts WHERE workspace_id = $1 AND path = $2 RETURNING hash;

-- name: delete_hash
-- The version stays (jobs and children name it) but its content is erased.
UPDATE scripts SET deleted = true, content = '', lock = NULL
WHERE workspace_id = $1 AND hash = $2
RETURNING *;

-- name: job_outcome
-- A finished job's outcome (no row while it is queued or running).
SELECT status, result, error
FROM jobs_completed
WHERE id = $1 AND workspace_id = $2;

-- name: set_lock
-- The outcome of a version's dependency job: its lockfile, or why there is none.
UPDATE scripts SET lock = $3, lock_error = $4
WHERE workspace_id = $1 AND hash = $2 AND NOT deleted;
