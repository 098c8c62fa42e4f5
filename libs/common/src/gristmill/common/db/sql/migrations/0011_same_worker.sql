-- same_worker flows: the worker every step of the flow runs on (NULL until its first
-- step is claimed, and again once that worker is lost).

ALTER TABLE flow_status ADD COLUMN worker text;

-- Jobs pinned to a worker (claim tag ``worker:<id>``), for finding those of lost workers.
CREATE INDEX job_queue_pinned_idx ON job_queue (tag)
    WHERE NOT running AND starts_with(tag, 'worker:');
