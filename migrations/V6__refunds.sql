-- Cancellation and refunds (SPEC §8). Refund progress is kept on the order
-- and its lines, which the refund statement locks first, so concurrent
-- refunds of one order see each other's effects and never return a unit twice.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders
    ADD CONSTRAINT orders_status_check CHECK (status IN
        ('PENDING', 'ON_HOLD', 'PAID', 'FAILED', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED')),
    -- Invariant 4: what was refunded, never more than was paid.
    ADD COLUMN refunded_amount bigint NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    ADD CONSTRAINT order_refunds_within_payment CHECK (refunded_amount <= total_amount - discount_amount),
    ADD CONSTRAINT order_refunded_only_after_payment CHECK (
        status NOT IN ('PARTIALLY_REFUNDED', 'REFUNDED') OR (balance_deducted AND paid_at IS NOT NULL));

-- Invariant 2: units given back to stock, never more than were sold.
ALTER TABLE order_items
    ADD COLUMN refunded_quantity bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT item_refunds_within_quantity CHECK (refunded_quantity BETWEEN 0 AND quantity);

-- SPEC §1: the 10,000,000 cap is a rule of charges (their statement checks it);
-- a refund may take the balance above it.
ALTER TABLE wallets DROP CONSTRAINT wallets_balance_check;
ALTER TABLE wallets ADD CONSTRAINT wallet_never_negative CHECK (balance >= 0);

-- One row per refund (a cancel is one refund of every unit).
CREATE TABLE refunds (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id            bigint      NOT NULL REFERENCES orders (id),
    -- Which route asked: the owner's cancel or an admin's refund.
    kind                text        NOT NULL CHECK (kind IN ('CANCEL', 'REFUND')),
    requested_by        bigint      NOT NULL,
    idempotency_key     text        NOT NULL,
    request_fingerprint text        NOT NULL,
    amount              bigint      NOT NULL CHECK (amount >= 0),
    -- [{"productId", "quantity", "amount"}], by product id.
    items               jsonb       NOT NULL,
    reason              text        CHECK (char_length(reason) <= 500),
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Invariant 5, durably: one key, one refund (scope: user, route with the order id, key).
    CONSTRAINT one_refund_per_key UNIQUE (order_id, kind, requested_by, idempotency_key)
);
CREATE INDEX refunds_by_order ON refunds (order_id, created_at);

-- A REFUND ledger entry names its refund.
ALTER TABLE wallet_ledger ADD COLUMN refund_id uuid REFERENCES refunds (id);
CREATE UNIQUE INDEX ledger_one_entry_per_refund ON wallet_ledger (refund_id) WHERE refund_id IS NOT NULL;
