-- The sample schema every node starts with (DDL is not replicated yet:
-- replicas must hold the replicated tables before Ferry starts).
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
