-- The database's identity (issue 17): every Redis key the app writes is
-- scoped by this id (`db:<database_id>:…`), so two databases that share one
-- Redis never read each other's coupon stock, idempotency records, rankings
-- or locks. The app is told the id through its `database_id` variable and
-- checks it against this row wherever it builds Redis state from Postgres.
-- A restored dump keeps the id (its Redis state is then reset with
-- `edge-host redis-reset`); a copy that must live beside the original gets a
-- new one: UPDATE app_identity SET database_id = gen_random_uuid();
CREATE TABLE app_identity (
    database_id uuid    NOT NULL DEFAULT gen_random_uuid(),
    -- Exactly one row.
    singleton   boolean NOT NULL DEFAULT true PRIMARY KEY CHECK (singleton)
);
INSERT INTO app_identity DEFAULT VALUES;
