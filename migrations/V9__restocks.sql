-- Restocks (SPEC §2): units added to a product by an admin, once per
-- idempotency key. Stock invariant 2 counts them with the initial stock:
-- initial_stock + Σ quantity = stock + units sold and not refunded.
CREATE TABLE product_restocks (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id          bigint      NOT NULL REFERENCES products (id),
    quantity            bigint      NOT NULL CHECK (quantity BETWEEN 1 AND 1000000),
    requested_by        bigint      NOT NULL,
    idempotency_key     text        NOT NULL,
    request_fingerprint text        NOT NULL,
    -- The product's orderable stock right after, as the restock answered it.
    available_after     bigint      NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Invariant 5, durably: one key, one restock (scope: user, route with the product id, key).
    CONSTRAINT one_restock_per_key UNIQUE (product_id, requested_by, idempotency_key)
);
