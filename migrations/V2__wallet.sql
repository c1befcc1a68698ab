-- Wallets and their append-only ledger (SPEC §1).
CREATE TABLE wallets (
    user_id    bigint      PRIMARY KEY,
    -- Invariant 1: never negative; SPEC §1: never above 10,000,000 KRW.
    balance    bigint      NOT NULL CHECK (balance >= 0 AND balance <= 10000000),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wallet_ledger (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             bigint      NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('CHARGE', 'PAYMENT', 'REFUND')),
    -- Signed: a CHARGE or REFUND adds, a PAYMENT takes (and may be 0 for a fully discounted order).
    amount              bigint      NOT NULL,
    balance_after       bigint      NOT NULL CHECK (balance_after >= 0),
    order_id            bigint,
    -- A charge's public id and its idempotency key (the durable backstop of invariant 5).
    charge_id           uuid        DEFAULT gen_random_uuid(),
    charge_key          text,
    request_fingerprint text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_amount_sign CHECK (
        (kind = 'PAYMENT' AND amount <= 0) OR (kind <> 'PAYMENT' AND amount > 0)),
    CONSTRAINT ledger_charge_has_key CHECK (kind <> 'CHARGE' OR charge_key IS NOT NULL),
    -- One key, one charge: a second charge with the same key fails as a whole.
    CONSTRAINT ledger_one_charge_per_key UNIQUE (user_id, charge_key)
);

-- The ledger newest first, per user.
CREATE INDEX wallet_ledger_by_user ON wallet_ledger (user_id, id DESC);
