-- First-come-first-served coupons (SPEC §3).
CREATE TABLE coupons (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    discount_type    text        NOT NULL CHECK (discount_type IN ('FIXED', 'RATE')),
    discount_value   bigint      NOT NULL CHECK (discount_value > 0),
    max_discount     bigint      CHECK (max_discount > 0),
    min_order_amount bigint      NOT NULL DEFAULT 0 CHECK (min_order_amount >= 0),
    total_quantity   bigint      NOT NULL CHECK (total_quantity > 0),
    -- Invariant 3 in Postgres: issues are counted on the coupon row, never past the quantity.
    issued_count     bigint      NOT NULL DEFAULT 0,
    issue_starts_at  timestamptz NOT NULL,
    issue_ends_at    timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coupon_rate_is_a_percentage CHECK (discount_type <> 'RATE' OR discount_value <= 100),
    CONSTRAINT coupon_window_in_order CHECK (issue_starts_at < issue_ends_at AND issue_ends_at <= expires_at),
    CONSTRAINT coupon_never_over_issued CHECK (issued_count BETWEEN 0 AND total_quantity)
);

CREATE TABLE user_coupons (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    coupon_id  bigint      NOT NULL REFERENCES coupons (id),
    user_id    bigint      NOT NULL,
    -- EXPIRED is derived from coupons.expires_at when read, never stored.
    status     text        NOT NULL DEFAULT 'ISSUED' CHECK (status IN ('ISSUED', 'USED')),
    -- The order that used it (invariant 3: a user coupon is USED by at most one order).
    order_id   bigint,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz,
    CONSTRAINT user_coupon_used_by_its_order CHECK ((status = 'USED') = (order_id IS NOT NULL)),
    -- Invariant 3: at most one per (coupon, user).
    CONSTRAINT one_coupon_per_user UNIQUE (coupon_id, user_id)
);

CREATE INDEX user_coupons_by_user ON user_coupons (user_id, id DESC);
