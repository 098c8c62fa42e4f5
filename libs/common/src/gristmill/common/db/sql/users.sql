-- Named queries of the users and tokens API (the gateway's ``routes/users`` module).
-- Tokens are created by gristmill.common.tokens.create_token (hashed); nothing here
-- ever reads or returns a token's secret.

-- name: user_get
SELECT id, COALESCE(email, id) AS email, is_admin, created_at FROM users WHERE id = $1;

-- name: workspace_exists
SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1);

-- name: tokens_list
-- The user's tokens, newest first. $2: leave out job-scoped (ephemeral) tokens.
SELECT prefix, label, expires_at, created_at, last_used_at, workspace_id, job_id
FROM tokens
WHERE user_id = $1 AND (NOT $2::bool OR job_id IS NULL)
ORDER BY created_at DESC, prefix
LIMIT $3 OFFSET $4;

-- name: tokens_delete
DELETE FROM tokens WHERE user_id = $1 AND prefix = $2 RETURNING prefix;
