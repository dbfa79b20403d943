-- The sample schema every node starts with, in `ferry demo` and in
-- docker-compose.yml. DDL sent through Ferry later is replicated; this file
-- is only the common starting point, so that the servers agree before Ferry
-- first starts. The application's role (docker/roles.sql) owns it.
SET ROLE app;
CREATE TABLE accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner text NOT NULL,
    balance numeric(12,2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    placed_at timestamptz NOT NULL DEFAULT now(),
    note text
);
CREATE TABLE order_lines (
    order_id uuid NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    line int NOT NULL,
    sku text NOT NULL,
    qty int NOT NULL,
    price numeric(10,2) NOT NULL,
    PRIMARY KEY (order_id, line)
);
CREATE TABLE audit_log (
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    what text NOT NULL
);
