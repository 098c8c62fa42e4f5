-- Kafka triggers (gristmill.common.kafka_triggers; consumed by the triggers service).
-- Each trigger consumes its topics in its own consumer group; every message becomes a
-- run request. error/error_at/server_id/last_server_ping are written by the triggers
-- service (the consumer's state), everything else by the API. A change of what a
-- consumer uses notifies 'gristmill_kafka_triggers' so that consumers are restarted.

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
