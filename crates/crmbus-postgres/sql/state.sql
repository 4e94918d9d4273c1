-- crmbus's delivery state and leases on PostgreSQL (crmbus_postgres::PgStateStore and
-- PgLeaseStore): what a backend without a state store of its own (Kafka) keeps its retry
-- schedules, dead letters, consumer dedupe records, audit log, group offsets and the
-- leases of servers sharing it in. Every row belongs to one crmbus namespace (`prefix`),
-- so deployments and test runs share the tables without seeing each other.
-- Safe to run twice.

-- One key-value entry. Keys are bytes (UTF-8 of crmbus's keys) so that the primary key's
-- order is byte order, which a prefix scan returns.
CREATE TABLE IF NOT EXISTS crmbus_state (
    prefix    text  NOT NULL,
    namespace text  NOT NULL,
    key       bytea NOT NULL,
    value     bytea NOT NULL,
    PRIMARY KEY (prefix, namespace, key)
);

-- One lease per row while it is held (a released or revoked lease has no row; an expired
-- one keeps its row until someone acquires it). Expiry is the database's clock.
CREATE TABLE IF NOT EXISTS crmbus_leases (
    prefix     text        NOT NULL,
    name       text        NOT NULL,
    holder     text        NOT NULL,
    token      bigint      NOT NULL,
    expires_at timestamptz NOT NULL,
    data       text        NOT NULL,
    PRIMARY KEY (prefix, name)
);

-- Fencing tokens: every acquisition takes the next value, so tokens only grow.
CREATE SEQUENCE IF NOT EXISTS crmbus_lease_token;
