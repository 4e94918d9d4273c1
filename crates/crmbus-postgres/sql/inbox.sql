-- crmbus inbox: exactly-once side effects for a consumer, in the consumer's own database.
-- Created by `crmbus outbox init` (with the outbox); printed by `crmbus outbox sql`.
--
-- A consumer handling an event runs, in ONE transaction with its side effect:
--   INSERT INTO crmbus_inbox (consumer, source, event_id) VALUES ($1, $2, $3)
--       ON CONFLICT DO NOTHING;
-- and applies the side effect only when that inserted a row (1 row affected). A second
-- delivery of the same event (same source and id) inserts nothing and changes nothing.

CREATE TABLE IF NOT EXISTS crmbus_inbox (
    consumer     text NOT NULL,
    source       text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, source, event_id)
);
