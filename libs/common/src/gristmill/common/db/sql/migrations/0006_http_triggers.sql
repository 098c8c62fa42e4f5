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
    -- HMAC-SHA256 key of the 'signature' method (never answered by reads).
    signature_secret      text,
    enabled               boolean NOT NULL DEFAULT true,
    email                 text NOT NULL,
    edited_by             text NOT NULL,
    edited_at             timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, path)
);
CREATE UNIQUE INDEX http_triggers_route_idx ON http_triggers (http_method, route_key);
CREATE INDEX http_triggers_segments_idx ON http_triggers (segments);
