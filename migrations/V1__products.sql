-- Products and their stock, reserved by pending orders (the reserve/release pattern).
CREATE TABLE products (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    price         bigint      NOT NULL CHECK (price > 0),
    -- Units physically in stock; `stock - reserved` can still be ordered.
    stock         bigint      NOT NULL CHECK (stock >= 0),
    -- Units held by orders that are not yet paid or cancelled.
    reserved      bigint      NOT NULL DEFAULT 0,
    -- Stock at creation: the stock invariant is `initial_stock = stock + units sold`.
    initial_stock bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reserved_within_stock CHECK (0 <= reserved AND reserved <= stock)
);
