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
    updated_at     timestamptz NOT NULL DEFAULT now()
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
