-- Cached results (gristmill.common.result_cache) and the starts of runs whose
-- concurrency limit counts over a time window (gristmill.common.queue).

-- A result computed for one version of a runnable and one set of arguments, reused
-- until ``expires_at`` instead of running again (``cache_ttl`` of scripts, flows and
-- flow steps). ``key`` is a SHA-256 over the workspace, the runnable's version and the
-- canonical JSON of the arguments; ``job_id`` is the job that computed the result.
CREATE TABLE result_cache (
    key          text PRIMARY KEY,
    workspace_id text NOT NULL,
    result       jsonb,
    job_id       uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX result_cache_expires_idx ON result_cache (expires_at);

-- When each job of a concurrency key with a time window started: at most
-- ``concurrency_limit`` of them start within any ``concurrency_time_window_s``.
CREATE TABLE concurrency_starts (
    key         text NOT NULL,
    job_id      uuid NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, started_at, job_id)
);
