-- Named queries of the result cache (gristmill.common.result_cache).

-- name: lookup
SELECT result, job_id FROM result_cache WHERE key = $1 AND expires_at > now();

-- name: store
-- A later result for the same key replaces the earlier one and restarts its TTL.
INSERT INTO result_cache (key, workspace_id, result, job_id, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::float8))
ON CONFLICT (key) DO UPDATE
SET result = EXCLUDED.result, job_id = EXCLUDED.job_id, created_at = now(),
    expires_at = EXCLUDED.expires_at;

-- name: purge_expired
WITH old AS (
    SELECT key FROM result_cache WHERE expires_at <= now() ORDER BY expires_at LIMIT $1
)
DELETE FROM result_cache c USING old WHERE c.key = old.key
RETURNING c.key;
