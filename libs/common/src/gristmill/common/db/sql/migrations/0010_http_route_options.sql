-- HTTP route options: a route served under its workspace's name, the body passed
-- wrapped or raw. Signature secrets are stored encrypted from now on (the column keeps
-- its name; gristmill.common.http_triggers seals and opens it).

ALTER TABLE http_triggers
    ADD COLUMN workspaced_route boolean NOT NULL DEFAULT false,
    ADD COLUMN wrap_body        boolean NOT NULL DEFAULT false,
    ADD COLUMN raw_string       boolean NOT NULL DEFAULT false;
