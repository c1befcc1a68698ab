-- Operations (SPEC "Operations"). Every recovery run, cron or admin route (`GET
-- /api/v1/admin/ops` shows the last one).
CREATE TABLE recovery_runs (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ran_at         timestamptz NOT NULL DEFAULT now(),
    examined       bigint      NOT NULL CHECK (examined >= 0),
    rolled_forward bigint      NOT NULL CHECK (rolled_forward >= 0),
    rolled_back    bigint      NOT NULL CHECK (rolled_back >= 0),
    skipped        bigint      NOT NULL CHECK (skipped >= 0),
    CONSTRAINT recovery_run_adds_up CHECK (examined = rolled_forward + rolled_back + skipped)
);

-- The request that placed the order (its `Request-Id`): an answer rebuilt
-- from Postgres for a repeated key is then the same bytes as the first, and
-- on call the order leads to the request's log line and trace.
ALTER TABLE orders ADD COLUMN request_id text;
