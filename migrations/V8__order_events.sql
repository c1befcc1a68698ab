-- Order events and their webhook deliveries (SPEC §9): a transactional
-- outbox. Each event is inserted by the very statement that makes its change
-- (the confirm of an order, recovery's roll-back, a refund), so there is never
-- a change without its event nor an event for a change that did not commit.

-- A time as the API writes it: RFC 3339 in UTC with microseconds and `Z`.
-- (Declared immutable: its input is UTC by construction and its format fixed.)
CREATE FUNCTION api_time(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

-- The webhook body of an event: `{"id", "type", "createdAt", "data"}`.
CREATE FUNCTION order_event_envelope(id uuid, type text, created_at timestamptz, data jsonb)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN jsonb_build_object('id', id, 'type', type, 'createdAt', api_time(created_at), 'data', data)::text;

CREATE TABLE order_events (
    id                   uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The order events were made in: an order's events are delivered in it.
    seq                  bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    order_id             bigint      NOT NULL REFERENCES orders (id),
    type                 text        NOT NULL
        CHECK (type IN ('order.paid', 'order.cancelled', 'order.refunded')),
    -- The refund an `order.refunded` is about.
    refund_id            uuid        REFERENCES refunds (id),
    data                 jsonb       NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- The body of every attempt, byte for byte.
    body                 text        NOT NULL
        GENERATED ALWAYS AS (order_event_envelope(id, type, created_at, data)) STORED,
    -- Delivery.
    status               text        NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts             integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    -- An attempt in flight: no other runner takes the event until the lease
    -- ends or its holder records how the attempt went.
    lease_token          uuid,
    lease_until          timestamptz,
    last_attempt_at      timestamptz,
    last_response_status integer,
    last_error           text,
    delivered_at         timestamptz,
    CONSTRAINT order_event_refund_named CHECK ((type = 'order.refunded') = (refund_id IS NOT NULL)),
    CONSTRAINT order_event_delivered_when CHECK ((status = 'DELIVERED') = (delivered_at IS NOT NULL))
);

-- Invariant 6, durably: one `order.paid` and at most one `order.cancelled`
-- per order, one `order.refunded` per refund. Also how an order's events
-- are found (the admin list's `orderId`).
CREATE UNIQUE INDEX one_event_per_change ON order_events (order_id, type, refund_id) NULLS NOT DISTINCT;

-- What a delivery run looks for, and the events of an order still waiting
-- (an event is not attempted while an earlier one of its order is). Both
-- hold PENDING events only, so a delivered event leaves them and its update
-- writes no entry to them.
CREATE INDEX order_events_due ON order_events (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX order_events_pending_of_order ON order_events (order_id, seq) WHERE status = 'PENDING';
-- The admin list, newest first, is the unique index of `seq` read backwards.
