-- Run-and-wait callers learn at once that their job ended: a job whose meta carries
-- "notify_done" announces its id on the channel gristmill_done when its outcome is
-- stored (whatever statement stored it). Other jobs cost one lookup per statement.

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
