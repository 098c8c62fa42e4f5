-- Gristmill initial schema.
-- Hot, mutable queue state (job_queue, job_runtime) is kept apart from immutable job
-- definitions (jobs) and from completed history (jobs_completed, job_logs) so that
-- the table workers hammer stays small and its indexes stay hot.

CREATE TABLE workspaces (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,49}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          text PRIMARY KEY,
    email       text,
    is_admin    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens, stored as SHA-256 digests; the clear token is shown once.
CREATE TABLE tokens (
    token_hash  bytea PRIMARY KEY,
    prefix      text NOT NULL,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    label       text,
    -- NULL: all workspaces the user may see; else bound to one workspace.
    workspace_id text REFERENCES workspaces (id) ON DELETE CASCADE,
    -- Set for job-scoped tokens: the token dies with the job.
    job_id      uuid,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX tokens_job_idx ON tokens (job_id) WHERE job_id IS NOT NULL;

-- Immutable job definitions: written once at enqueue time.
CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    workspace_id      text NOT NULL,
    kind              text NOT NULL,
    runnable_path     text,
    runnable_hash     text,
    language          text,
    code              text,
    lock              text,
    flow_value        jsonb,
    args              jsonb NOT NULL DEFAULT '{}'::jsonb,
    tag               text NOT NULL,
    priority          smallint NOT NULL DEFAULT 0,
    created_by        text NOT NULL,
    trigger_kind      text NOT NULL,
    trigger_source    text,
    idempotency_key   text,
    parent_job        uuid,
    root_job          uuid,
    flow_step         text,
    timeout_s         double precision,
    retry             jsonb,
    concurrency_key   text,
    concurrency_limit integer,
    meta              jsonb NOT NULL DEFAULT '{}'::jsonb,
    scheduled_for     timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (workspace_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_workspace_created_idx ON jobs (workspace_id, created_at DESC);
CREATE INDEX jobs_parent_idx ON jobs (parent_job) WHERE parent_job IS NOT NULL;
CREATE INDEX jobs_created_idx ON jobs (created_at);

-- Claimable and running jobs only. A row leaves this table when its job ends.
CREATE TABLE job_queue (
    id                uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    workspace_id      text NOT NULL,
    tag               text NOT NULL,
    priority          smallint NOT NULL DEFAULT 0,
    scheduled_for     timestamptz NOT NULL,
    running           boolean NOT NULL DEFAULT false,
    worker            text,
    started_at        timestamptz,
    -- Number of times the job was claimed.
    attempt           integer NOT NULL DEFAULT 0,
    -- Number of times the job was put back after its worker vanished.
    restarts          integer NOT NULL DEFAULT 0,
    concurrency_key   text,
    concurrency_limit integer,
    cancel_requested  boolean NOT NULL DEFAULT false,
    canceled_by       text,
    cancel_reason     text
);
-- The claim index: only unclaimed rows, in claim order.
CREATE INDEX job_queue_claim_idx ON job_queue (tag, priority DESC, scheduled_for, id)
    WHERE NOT running;
CREATE INDEX job_queue_running_idx ON job_queue (worker) WHERE running;

-- Frequently updated per-running-job state, kept off job_queue to limit its churn.
CREATE TABLE job_runtime (
    id              uuid PRIMARY KEY REFERENCES job_queue (id) ON DELETE CASCADE,
    ping            timestamptz NOT NULL DEFAULT now(),
    memory_peak_kb  integer
);

-- Completed history: written once when a job ends.
CREATE TABLE jobs_completed (
    id              uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    workspace_id    text NOT NULL,
    status          text NOT NULL CHECK (status IN ('success', 'failure', 'canceled')),
    result          jsonb,
    error           jsonb,
    exit_reason     text NOT NULL,
    started_at      timestamptz,
    completed_at    timestamptz NOT NULL DEFAULT now(),
    duration_ms     integer,
    attempt         integer NOT NULL DEFAULT 0,
    worker          text,
    canceled_by     text,
    memory_peak_kb  integer
);
CREATE INDEX jobs_completed_workspace_idx ON jobs_completed (workspace_id, completed_at DESC);
CREATE INDEX jobs_completed_completed_at_idx ON jobs_completed (completed_at);

-- Append-only log chunks.
CREATE TABLE job_logs (
    job_id      uuid NOT NULL,
    seq         integer NOT NULL,
    chunk       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq)
);

-- Running-job counters per concurrency key.
CREATE TABLE concurrency_slots (
    key      text PRIMARY KEY,
    running  integer NOT NULL DEFAULT 0 CHECK (running >= 0)
);

-- Bus messages that could not be decoded or validated, parked with their error.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL,
    partition   integer NOT NULL DEFAULT 0,
    "offset"    bigint NOT NULL DEFAULT -1,
    key         bytea,
    payload     bytea NOT NULL,
    error       text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX dead_letters_position_idx ON dead_letters (source, partition, "offset")
    WHERE "offset" >= 0;

-- Live workers, as they report themselves.
CREATE TABLE workers (
    id           text PRIMARY KEY,
    worker_group text NOT NULL DEFAULT 'default',
    tags         text[] NOT NULL,
    hostname     text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_ping    timestamptz NOT NULL DEFAULT now(),
    current_job  uuid,
    jobs_done    bigint NOT NULL DEFAULT 0,
    memory_kb    integer,
    sandbox      text,
    version      text
);
