-- crmbus transactional outbox: the table applications write to, in any language.
-- Created by `crmbus outbox init`; printed by `crmbus outbox sql`. Safe to run twice.
--
-- The contract (stable):
--   An application publishes an event by inserting one row into crmbus_outbox in the same
--   transaction as the change the event describes. The row is published if and only if the
--   transaction commits. Columns the application sets:
--     topics  text[]  the crmbus topics to publish to (at least one)
--     event   jsonb   a structured CloudEvent: "id", "source" and "type" required,
--                     "specversion" filled in ("1.0") when missing; "subject" (the business
--                     key, e.g. the deal's id) orders the events of one entity
--   Columns the relay sets: published_at (when the event was stored by crmbus), attempts,
--   first_attempt_at, failed_at and last_error (a row crmbus refused, e.g. a schema
--   violation; it is not retried until failed_at is set back to NULL, and the later rows of
--   its subject wait for it, so that a subject's events are never published out of order).
--   One relay publishes per database (an advisory lock): keep one outbox per database.
--   Rows of one subject are published in the order of id, which this table's trigger makes
--   the commit order: an insert takes a transaction lock on its subject before drawing its id.
--   So two transactions writing about the same subject take turns (as they would updating the
--   same domain row), and a transaction that writes events about several subjects should
--   write them in a consistent order (say, sorted by subject): two transactions taking the
--   same subjects in opposite orders deadlock, and PostgreSQL aborts one of them.

CREATE TABLE IF NOT EXISTS crmbus_outbox (
    id               bigserial PRIMARY KEY,
    topics           text[] NOT NULL
                     CONSTRAINT crmbus_outbox_topics CHECK (
                         cardinality(topics) > 0
                         AND array_ndims(topics) = 1
                         AND array_position(topics, NULL) IS NULL),
    event            jsonb NOT NULL
                     CONSTRAINT crmbus_outbox_event CHECK (
                         jsonb_typeof(event) = 'object'
                         AND jsonb_typeof(event -> 'id') IS NOT DISTINCT FROM 'string'
                         AND jsonb_typeof(event -> 'source') IS NOT DISTINCT FROM 'string'
                         AND jsonb_typeof(event -> 'type') IS NOT DISTINCT FROM 'string'),
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at     timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    first_attempt_at timestamptz,
    failed_at        timestamptz,
    last_error       text
);

-- What the relay claims, oldest first.
CREATE INDEX IF NOT EXISTS crmbus_outbox_pending
    ON crmbus_outbox (id) WHERE published_at IS NULL AND failed_at IS NULL;
-- What retention deletes.
CREATE INDEX IF NOT EXISTS crmbus_outbox_published
    ON crmbus_outbox (published_at) WHERE published_at IS NOT NULL;
-- Rows set aside, by subject: later rows of such a subject wait until it is fixed.
CREATE INDEX IF NOT EXISTS crmbus_outbox_failed
    ON crmbus_outbox ((event ->> 'subject'), id) WHERE failed_at IS NOT NULL;

-- Before each insert: lock the event's subject for the rest of the transaction, then draw
-- the id, so that of two transactions writing about one subject the one that commits
-- first has the smaller id; and fill in specversion.
CREATE OR REPLACE FUNCTION crmbus_outbox_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_typeof(NEW.event -> 'subject') = 'string' THEN
        -- Subject locks have a key space of their own (the relay's lock is 1668441442).
        PERFORM pg_advisory_xact_lock(1668441443, hashtext(NEW.event ->> 'subject'));
        NEW.id := nextval(pg_get_serial_sequence(
            quote_ident(TG_TABLE_SCHEMA) || '.crmbus_outbox', 'id'));
    END IF;
    IF NOT (NEW.event ? 'specversion') THEN
        NEW.event := NEW.event || '{"specversion": "1.0"}'::jsonb;
    END IF;
    RETURN NEW;
END
$$;

-- After each inserting statement: wake the relay (delivered when the transaction commits;
-- several in one transaction arrive as one).
CREATE OR REPLACE FUNCTION crmbus_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crmbus_outbox', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS crmbus_outbox_before_insert ON crmbus_outbox;
CREATE TRIGGER crmbus_outbox_before_insert BEFORE INSERT ON crmbus_outbox
    FOR EACH ROW EXECUTE FUNCTION crmbus_outbox_before_insert();
DROP TRIGGER IF EXISTS crmbus_outbox_notify ON crmbus_outbox;
CREATE TRIGGER crmbus_outbox_notify AFTER INSERT ON crmbus_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION crmbus_outbox_notify();
