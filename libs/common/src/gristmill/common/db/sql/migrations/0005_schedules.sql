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
