-- Orders and payment (SPEC §4). An order records which steps have happened,
-- so recovery can finish or undo it from its stored state alone.
CREATE TABLE orders (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             bigint      NOT NULL,
    idempotency_key     text        NOT NULL,
    request_fingerprint text        NOT NULL,
    status              text        NOT NULL
        CHECK (status IN ('PENDING', 'ON_HOLD', 'PAID', 'FAILED', 'CANCELLED')),
    user_coupon_id      bigint,
    total_amount        bigint      NOT NULL CHECK (total_amount >= 0),
    discount_amount     bigint      NOT NULL DEFAULT 0 CHECK (discount_amount >= 0),
    -- Progress, kept on the order row so that every step, which locks this row
    -- first, sees the latest progress even after waiting for another step:
    -- the products whose stock this order holds (or held, once final), whether
    -- it took its coupon, whether the wallet was debited.
    reserved_products   bigint[]    NOT NULL DEFAULT '{}',
    coupon_applied      boolean     NOT NULL DEFAULT false,
    balance_deducted    boolean     NOT NULL DEFAULT false,
    -- Why a FAILED order failed, to answer a repeat of its request the same way.
    failure_code        text,
    failure_detail      text,
    failure_product_id  bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    paid_at             timestamptz,
    CONSTRAINT order_discount_within_total CHECK (discount_amount <= total_amount),
    CONSTRAINT order_paid_only_after_debit CHECK (status <> 'PAID' OR (balance_deducted AND paid_at IS NOT NULL)),
    CONSTRAINT order_failed_has_reason CHECK ((status = 'FAILED') = (failure_code IS NOT NULL)),
    -- Invariant 5, durably: one key, one order.
    CONSTRAINT one_order_per_key UNIQUE (user_id, idempotency_key)
);

CREATE INDEX orders_by_user ON orders (user_id, id DESC);
-- What recovery looks for.
CREATE INDEX orders_unfinished ON orders (created_at) WHERE status IN ('PENDING', 'ON_HOLD');

CREATE TABLE order_items (
    order_id   bigint  NOT NULL REFERENCES orders (id),
    product_id bigint  NOT NULL,
    quantity   bigint  NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    -- The price when the order was placed.
    unit_price bigint  NOT NULL CHECK (unit_price > 0),
    PRIMARY KEY (order_id, product_id)
);

-- Invariant 4: a paid order has exactly one PAYMENT entry.
CREATE UNIQUE INDEX ledger_one_payment_per_order ON wallet_ledger (order_id) WHERE kind = 'PAYMENT';
