-- Gristmill schema: the result of applying every migration in migrations/ in order.
-- A test keeps the two in step. Edit both: add a numbered migration, then update this.

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
-- Jobs pinned to a worker (claim tag ``worker:<id>``), for finding those of lost workers.
CREATE INDEX job_queue_pinned_idx ON job_queue (tag)
    WHERE NOT running AND starts_with(tag, 'worker:');

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

-- The script registry: one row per saved version of a script.
-- A version is immutable once written (its hash is derived from its content, its
-- settings and its parent); only the archived/deleted flags change afterwards, and
-- deleting a single version erases its content but keeps the row.

CREATE TABLE scripts (
    workspace_id  text NOT NULL,
    hash          text NOT NULL CHECK (hash ~ '^[0-9a-f]{16}$'),
    path          text NOT NULL,
    -- Direct parent first, then its parent, ... (a bounded number of ancestors).
    parent_hashes text[] NOT NULL DEFAULT '{}',
    summary       text NOT NULL DEFAULT '',
    description   text NOT NULL DEFAULT '',
    content       text NOT NULL,
    language      text NOT NULL,
    kind          text NOT NULL DEFAULT 'script',
    -- JSON Schema of main's inputs: sent by the client or read from the code at save time.
    schema        jsonb,
    lock          text,
    -- Why resolving the dependencies of this version failed (uv's report), if it did.
    lock_error    text,
    -- Worker tag override; NULL means the language's default tag.
    tag           text,
    is_template   boolean NOT NULL DEFAULT false,
    -- Other settings of the saved script (timeout, priority, envs, ...), kept as sent.
    extra         jsonb NOT NULL DEFAULT '{}'::jsonb,
    archived      boolean NOT NULL DEFAULT false,
    deleted       boolean NOT NULL DEFAULT false,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, hash)
);
-- Latest version at a path, and listings of latest versions per path.
CREATE INDEX scripts_path_idx ON scripts (workspace_id, path, created_at DESC);

-- Variables (secrets encrypted at rest), resource types, resources, and each
-- workspace's wrapped data keys (gristmill.common.variables, .resources, .keystore).

-- A workspace's data keys, each wrapped by a master key: a StoredWorkspaceKeys as JSON.
-- ``version`` grows on every change, so that caches of the unwrapped keys see staleness.
-- Writers of secrets hold this row FOR SHARE; a rotation holds it FOR UPDATE.
CREATE TABLE workspace_keys (
    workspace_id text PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    keys         jsonb NOT NULL,
    version      bigint NOT NULL DEFAULT 1,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Text variables. A secret's value is its ciphertext ('$gm1$...'), bound to the
-- workspace and the path; other values are stored as they are.
CREATE TABLE variables (
    workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path         text NOT NULL,
    value        text NOT NULL,
    is_secret    boolean NOT NULL DEFAULT false,
    description  text NOT NULL DEFAULT '',
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    edited_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, path),
    CONSTRAINT variables_secret_is_encrypted CHECK (NOT is_secret OR value LIKE '$gm%')
);

-- Kinds of resources; ``schema`` (a JSON Schema, or NULL) validates their values.
CREATE TABLE resource_types (
    workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL,
    schema       jsonb,
    description  text NOT NULL DEFAULT '',
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    edited_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, name)
);

-- JSON values of a type (connection settings, script state, ...); strings
-- '$var:<path>' and '$res:<path>' in them are references resolved on demand.
CREATE TABLE resources (
    workspace_id  text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path          text NOT NULL,
    resource_type text NOT NULL,
    value         jsonb,
    description   text NOT NULL DEFAULT '',
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    edited_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, path),
    CONSTRAINT resources_type_fkey FOREIGN KEY (workspace_id, resource_type)
        REFERENCES resource_types (workspace_id, name)
);
CREATE INDEX resources_type_idx ON resources (workspace_id, resource_type);

-- Flows: saved OpenFlow documents, and the state of running flows.
-- A flow runs as a job (kind 'flow' or 'flowpreview'); its steps are child jobs
-- (parent_job, root_job, flow_step). Loop iterations and branches run as child flow
-- jobs of their own. The mutable progress of each flow job lives in flow_status,
-- never in jobs (immutable).

-- One row per saved flow path: the document as sent (unknown fields included).
CREATE TABLE flows (
    workspace_id  text NOT NULL,
    path          text NOT NULL,
    summary       text NOT NULL DEFAULT '',
    description   text NOT NULL DEFAULT '',
    -- The OpenFlow ``value`` (modules, failure_module, settings).
    value         jsonb NOT NULL,
    -- JSON Schema of the flow's inputs.
    schema        jsonb,
    -- Other top-level fields of the document, kept as sent.
    extra         jsonb NOT NULL DEFAULT '{}'::jsonb,
    archived      boolean NOT NULL DEFAULT false,
    -- Grows on every save.
    version       bigint NOT NULL DEFAULT 1,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    edited_by     text NOT NULL,
    edited_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, path)
);

-- Progress of each running (or ended) flow job: a FlowState as JSON, the flow's user
-- states, and the key that signs the resume URLs of its approval steps. Advancing a
-- flow locks its row (FOR UPDATE) in the transaction that completed the step.
CREATE TABLE flow_status (
    id             uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    root_job       uuid NOT NULL,
    state          jsonb NOT NULL,
    user_states    jsonb NOT NULL DEFAULT '{}'::jsonb,
    resume_secret  bytea NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- same_worker flows: the worker their steps are pinned to (NULL: none yet).
    worker         text
);

-- The items of a for-loop, computed once when the loop starts.
CREATE TABLE flow_iterators (
    flow_id  uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step_id  text NOT NULL,
    items    jsonb NOT NULL,
    PRIMARY KEY (flow_id, step_id)
);

-- Approvals and denials of suspended steps, keyed by the step's job (they may
-- arrive while that job still runs). A resume URL is single-use.
CREATE TABLE flow_resume_events (
    job_id      uuid NOT NULL,
    resume_id   bigint NOT NULL,
    flow_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    approved    boolean NOT NULL,
    approver    text,
    payload     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, resume_id)
);

-- Cron schedules (gristmill.common.schedules; fired by the scheduler service).
-- A schedule runs a script or flow at the ticks of a cron expression in a time zone.
-- ``next_fire_at`` is the earliest tick not handled yet: a scheduler replica claims due
-- rows FOR UPDATE SKIP LOCKED, publishes their ticks' run requests and moves
-- ``next_fire_at`` on in the same transaction, so each tick is handled once; a tick's
-- job id derives from its idempotency key (schedule:<ws>:<path>:<tick>), so a tick
-- published again after a crash makes no second job.

CREATE TABLE schedules (
    workspace_id           text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path                   text NOT NULL,
    schedule               text NOT NULL,
    timezone               text NOT NULL,
    -- 'v1' or 'v2' (how the day-of-week field is numbered).
    cron_version           text NOT NULL DEFAULT 'v2',
    script_path            text NOT NULL,
    is_flow                boolean NOT NULL DEFAULT false,
    args                   jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled                boolean NOT NULL DEFAULT true,
    summary                text,
    description            text,
    tag                    text,
    -- Skip a tick while the previous run of this schedule has not ended.
    no_flow_overlap        boolean NOT NULL DEFAULT false,
    -- After downtime: 'skip' (one run for the latest missed tick) or 'all' (every
    -- missed tick, the latest catch_up_max of them).
    catch_up               text NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip', 'all')),
    catch_up_max           integer NOT NULL DEFAULT 100 CHECK (catch_up_max >= 1),
    -- Handlers: '<kind>/<path>' with kind 'script' or 'flow' (a bare path is a script).
    on_failure             text,
    on_failure_times       integer NOT NULL DEFAULT 1 CHECK (on_failure_times >= 1),
    on_failure_exact       boolean NOT NULL DEFAULT false,
    on_failure_extra_args  jsonb,
    on_recovery            text,
    on_recovery_times      integer NOT NULL DEFAULT 1 CHECK (on_recovery_times >= 1),
    on_recovery_extra_args jsonb,
    on_success             text,
    on_success_extra_args  jsonb,
    ws_error_handler_muted boolean NOT NULL DEFAULT false,
    -- Windmill's Retry object, as sent.
    retry                  jsonb,
    -- No tick before this instant fires.
    paused_until           timestamptz,
    email                  text NOT NULL,
    edited_by              text NOT NULL,
    edited_at              timestamptz NOT NULL DEFAULT now(),
    created_at             timestamptz NOT NULL DEFAULT now(),
    -- The scheduler's state: the next tick to handle (NULL: the expression fires no more),
    -- the last tick that fired, and why the schedule last failed to fire (if it did).
    next_fire_at           timestamptz,
    last_fired_at          timestamptz,
    error                  text,
    -- Outcomes of the fired runs, settled in tick order: the current streaks, and the
    -- last failure not yet followed by a recovery (job, error, started_at).
    failure_streak         integer NOT NULL DEFAULT 0,
    success_streak         integer NOT NULL DEFAULT 0,
    unrecovered_failure    jsonb,
    PRIMARY KEY (workspace_id, path)
);
-- The claim of due schedules.
CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE enabled;

-- Fired ticks whose outcome is not settled yet (their job may still be queued or
-- running). Written in the transaction that fires the tick; deleted once its job
-- ended and the schedule's handlers, if any, were published.
CREATE TABLE schedule_fires (
    workspace_id  text NOT NULL,
    path          text NOT NULL,
    tick          timestamptz NOT NULL,
    job_id        uuid NOT NULL,
    fired_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, path, tick),
    FOREIGN KEY (workspace_id, path) REFERENCES schedules (workspace_id, path)
        ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX schedule_fires_job_idx ON schedule_fires (job_id);

-- HTTP routes (gristmill.common.http_triggers; served at /api/r/<route> by the gateway).
-- Routes are global to the instance, as in Windmill: one method and one route shape
-- (route_key: literal segments kept, parameters as ':') belong to one trigger.

CREATE TABLE http_triggers (
    workspace_id          text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path                  text NOT NULL,
    route_path            text NOT NULL,
    route_key             text NOT NULL,
    segments              integer NOT NULL,
    http_method           text NOT NULL
        CHECK (http_method IN ('get', 'post', 'put', 'delete', 'patch')),
    script_path           text NOT NULL,
    is_flow               boolean NOT NULL DEFAULT false,
    is_async              boolean NOT NULL DEFAULT false,
    authentication_method text NOT NULL DEFAULT 'none'
        CHECK (authentication_method IN ('none', 'windmill', 'signature')),
    -- HMAC-SHA256 key of the 'signature' method, encrypted with the workspace's data
    -- key (never answered by reads).
    signature_secret      text,
    enabled               boolean NOT NULL DEFAULT true,
    email                 text NOT NULL,
    edited_by             text NOT NULL,
    edited_at             timestamptz NOT NULL,
    -- Served at /api/r/<workspace>/<route_path> instead of /api/r/<route_path>.
    workspaced_route      boolean NOT NULL DEFAULT false,
    -- The body is passed whole as the `body` argument instead of spread into arguments.
    wrap_body             boolean NOT NULL DEFAULT false,
    -- The body is also passed, unparsed, as the `raw_string` argument.
    raw_string            boolean NOT NULL DEFAULT false,
    PRIMARY KEY (workspace_id, path)
);
CREATE UNIQUE INDEX http_triggers_route_idx ON http_triggers (http_method, route_key);
CREATE INDEX http_triggers_segments_idx ON http_triggers (segments);

-- WebSocket triggers (gristmill.common.websocket_triggers; connected by the triggers
-- service) and email triggers (gristmill.common.email_triggers; served by its SMTP server).
--
-- A WebSocket trigger is connected by one triggers replica at a time: the replica holds a
-- lease on the row (server_id, last_server_ping, renewed while connected; another replica
-- may take the row once the lease is older than its time to live). error is the last
-- connection error (NULL while connected). A change of what a connection uses notifies
-- 'gristmill_websocket_triggers' so that connections are remade without a restart.

CREATE TABLE websocket_triggers (
    workspace_id            text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path                    text NOT NULL,
    -- ws:// or wss:// URL, or '$script:<path>' / '$flow:<path>' whose result is the URL.
    url                     text NOT NULL,
    url_runnable_args       jsonb,
    script_path             text NOT NULL,
    is_flow                 boolean NOT NULL DEFAULT false,
    -- [{"key": ..., "value": ...}]: JSON messages whose field contains the value.
    filters                 jsonb NOT NULL DEFAULT '[]'::jsonb,
    filter_logic            text NOT NULL DEFAULT 'and' CHECK (filter_logic IN ('and', 'or')),
    -- [{"raw_message": ...} | {"runnable_result": {"path", "args", "is_flow"}}]
    initial_messages        jsonb NOT NULL DEFAULT '[]'::jsonb,
    can_return_message      boolean NOT NULL DEFAULT false,
    can_return_error_result boolean NOT NULL DEFAULT false,
    enabled                 boolean NOT NULL DEFAULT true,
    email                   text NOT NULL,
    edited_by               text NOT NULL,
    edited_at               timestamptz NOT NULL,
    server_id               text,
    last_server_ping        timestamptz,
    error                   text,
    error_at                timestamptz,
    PRIMARY KEY (workspace_id, path)
);

CREATE FUNCTION websocket_triggers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gristmill_websocket_triggers', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER websocket_triggers_changed
    AFTER INSERT OR DELETE OR UPDATE OF
        path, url, url_runnable_args, script_path, is_flow, filters, filter_logic,
        initial_messages, can_return_message, can_return_error_result, enabled, edited_by
    ON websocket_triggers FOR EACH STATEMENT EXECUTE FUNCTION websocket_triggers_notify();

-- Email triggers: mail to <address>@<GRISTMILL_SMTP_DOMAIN> runs the script or flow.
-- address is the local part the SMTP server matches, lower-cased: local_part, or
-- '<workspace>-<local_part>' when workspaced_local_part. Addresses are global.
CREATE TABLE email_triggers (
    workspace_id          text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path                  text NOT NULL,
    local_part            text NOT NULL,
    workspaced_local_part boolean NOT NULL DEFAULT false,
    address               text NOT NULL,
    script_path           text NOT NULL,
    is_flow               boolean NOT NULL DEFAULT false,
    enabled               boolean NOT NULL DEFAULT true,
    email                 text NOT NULL,
    edited_by             text NOT NULL,
    edited_at             timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, path)
);
CREATE UNIQUE INDEX email_triggers_address_idx ON email_triggers (address);

-- Kafka triggers (gristmill.common.kafka_triggers; consumed by the triggers service).
-- error/error_at/server_id/last_server_ping are the consumer's state (triggers service).

CREATE TABLE kafka_triggers (
    workspace_id        text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path                text NOT NULL,
    kafka_resource_path text NOT NULL,
    group_id            text NOT NULL,
    topics              text[] NOT NULL,
    script_path         text NOT NULL,
    is_flow             boolean NOT NULL DEFAULT false,
    -- Where a group with no committed offset starts: 'latest' or 'earliest'.
    auto_offset_reset   text NOT NULL DEFAULT 'latest'
        CHECK (auto_offset_reset IN ('latest', 'earliest')),
    enabled             boolean NOT NULL DEFAULT true,
    email               text NOT NULL,
    edited_by           text NOT NULL,
    edited_at           timestamptz NOT NULL,
    error               text,
    error_at            timestamptz,
    server_id           text,
    last_server_ping    timestamptz,
    PRIMARY KEY (workspace_id, path)
);

-- Messages a trigger could not turn into a run request (their offsets were committed).
CREATE TABLE kafka_trigger_parked (
    id           bigserial PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    trigger_path text NOT NULL,
    topic        text NOT NULL,
    "partition"  integer NOT NULL,
    "offset"     bigint NOT NULL,
    key          bytea,
    value        bytea,
    headers      jsonb NOT NULL DEFAULT '[]',
    error        jsonb NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, trigger_path, topic, "partition", "offset")
);

CREATE FUNCTION kafka_triggers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gristmill_kafka_triggers', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER kafka_triggers_changed
    AFTER INSERT OR DELETE OR UPDATE OF
        path, kafka_resource_path, group_id, topics, script_path, is_flow, auto_offset_reset,
        enabled
    ON kafka_triggers FOR EACH STATEMENT EXECUTE FUNCTION kafka_triggers_notify();

-- Jobs waited for (meta "notify_done") announce their end on gristmill_done.
CREATE FUNCTION jobs_completed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gristmill_done', n.id::text)
    FROM new_rows n
    JOIN jobs j ON j.id = n.id
    WHERE j.meta ? 'notify_done';
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_completed_done
    AFTER INSERT ON jobs_completed
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_completed_notify();
