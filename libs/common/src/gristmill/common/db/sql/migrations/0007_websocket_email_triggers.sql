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
