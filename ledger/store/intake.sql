-- The PostgreSQL write path: a durable intake, sequenced into the log in batches.
--
-- Writers call ledger_intake_account_charges: it checks the charge-id index
-- (keyed by account and charge id: ids are idempotency keys scoped to their
-- account) and the price catalogue, and inserts the index row and a pending
-- row in the same
-- transaction. Nothing in it takes a lock that another writer waits for
-- (the catalogue lock is shared), so concurrent writers commit concurrently
-- and share WAL flushes. Its commit is the acknowledgement.
--
-- ledger_sequence moves pending rows into ledger_events under the events
-- table's EXCLUSIVE lock (the lock the library's own inserts take), numbering
-- each account's versions after its stream (ledger_stream_version, versions.sql). Every
-- insert into the log still holds that lock through its commit, so
-- notification ids become visible in order and readers never step past an
-- id whose transaction may still commit.

CREATE TABLE IF NOT EXISTS ledger_intake (
    seq bigserial PRIMARY KEY,
    originator_id uuid NOT NULL,
    state bytea NOT NULL,
    opened_state bytea NOT NULL
);

-- The advisory lock that orders writers' catalogue checks against price
-- changes: writers take it shared, setting a price takes it alone. Its key,
-- and the sequencer's, come from ledger/store/locks.py when this is installed.
CREATE OR REPLACE FUNCTION ledger_prices_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE AS 'SELECT @LockKey.PRICES@::bigint';

-- One sequencer at a time moves the intake into the log.
CREATE OR REPLACE FUNCTION ledger_sequencer_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE AS 'SELECT @LockKey.SEQUENCER@::bigint';

CREATE OR REPLACE FUNCTION ledger_intake_account_charges(
    p_charge_ids text[], p_account_ids text[], p_originators uuid[], p_hashes text[],
    p_payloads text[], p_states bytea[], p_opened_states bytea[], p_recorded_at timestamptz,
    p_topic text, p_opened_topic text, p_catalogue_id uuid, p_catalogue_version bigint,
    p_user_ids text[], p_occurred_ats timestamptz[], p_costs bigint[], p_tokens bigint[]
) RETURNS TABLE(idx integer, known_payload text, known_recorded_at timestamptz, notification_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
    added text[];
    opened bytea;
BEGIN
    -- Shared: writers never wait for each other here, only for a price being set
    -- (which takes it exclusively), so costs are checked against the catalogue
    -- as it stands when this transaction commits.
    PERFORM pg_advisory_xact_lock_shared(ledger_prices_lock_key());
    SELECT coalesce(max(e.originator_version), 0) INTO v FROM ledger_events e
        WHERE e.originator_id = p_catalogue_id;
    IF v <> p_catalogue_version THEN
        idx := 0; known_payload := NULL; known_recorded_at := NULL; notification_id := v;
        RETURN NEXT;
        RETURN;
    END IF;
    IF cardinality(p_charge_ids) = 1 THEN
        idx := 1;
        INSERT INTO ledger_charge_index (account_id, charge_id, payload_hash, payload, recorded_at,
                                         user_id, occurred_at, cost_micros, total_tokens)
            VALUES (p_account_ids[1], p_charge_ids[1], p_hashes[1], p_payloads[1], p_recorded_at,
                    p_user_ids[1], p_occurred_ats[1], p_costs[1], p_tokens[1])
            ON CONFLICT (account_id, charge_id) DO NOTHING;
        IF FOUND THEN
            -- The Opened state goes along only while the log lacks the account:
            -- once it holds an event of the stream the sequencer numbers after it
            -- and writes no Opened event (compaction never removes a stream's
            -- events without a snapshot, which counts the same). About 150 bytes
            -- less WAL for every other charge; the lookup is the catalogue check's.
            opened := p_opened_states[1];
            IF length(opened) > 0 THEN
                SELECT max(e.originator_version) INTO v FROM ledger_events e WHERE e.originator_id = p_originators[1];
                IF v IS NOT NULL THEN
                    opened := ''::bytea;
                END IF;
            END IF;
            INSERT INTO ledger_intake (originator_id, state, opened_state)
                VALUES (p_originators[1], p_states[1], opened)
                RETURNING ledger_intake.seq INTO notification_id;
        ELSE
            -- A new statement, so a new snapshot: it sees the row that conflicted.
            SELECT c.payload, c.recorded_at INTO known_payload, known_recorded_at
                FROM ledger_charge_index c
                WHERE c.account_id = p_account_ids[1] AND c.charge_id = p_charge_ids[1];
        END IF;
        RETURN NEXT;
        RETURN;
    END IF;
    -- Several: the first occurrence of each (account, id) is offered to the
    -- index (in key order, so two batches sharing keys cannot deadlock); those
    -- it took are queued.
    WITH input AS (
        SELECT t.i::integer AS i, t.charge_id, t.account_id, t.originator, t.hash, t.payload, t.state,
               t.user_id, t.occurred_at, t.cost, t.tokens,
               first_value(t.opened) OVER (PARTITION BY t.originator ORDER BY length(t.opened) DESC) AS opened,
               min(t.i::integer) OVER (PARTITION BY t.account_id, t.charge_id) AS first
        FROM unnest(p_charge_ids, p_account_ids, p_originators, p_hashes, p_payloads, p_states, p_opened_states,
                    p_user_ids, p_occurred_ats, p_costs, p_tokens)
             WITH ORDINALITY AS t(charge_id, account_id, originator, hash, payload, state, opened,
                                  user_id, occurred_at, cost, tokens, i)
    ), indexed AS (
        INSERT INTO ledger_charge_index (account_id, charge_id, payload_hash, payload, recorded_at,
                                         user_id, occurred_at, cost_micros, total_tokens)
        SELECT n.account_id, n.charge_id, n.hash, n.payload, p_recorded_at,
               n.user_id, n.occurred_at, n.cost, n.tokens
        FROM input n WHERE n.i = n.first ORDER BY n.account_id, n.charge_id
        ON CONFLICT (account_id, charge_id) DO NOTHING
        RETURNING ledger_charge_index.account_id, ledger_charge_index.charge_id
    ), opened AS (
        -- Each account's Opened state, or none where the log holds the account (as above).
        SELECT o.originator,
               CASE WHEN (SELECT max(e.originator_version) FROM ledger_events e
                          WHERE e.originator_id = o.originator) IS NULL THEN o.opened ELSE ''::bytea END AS state
        FROM (SELECT DISTINCT n.originator, n.opened FROM input n) o
    ), queued AS (
        INSERT INTO ledger_intake (originator_id, state, opened_state)
        SELECT n.originator, n.state, o.state FROM input n JOIN opened o ON o.originator = n.originator
        WHERE n.i = n.first AND (n.account_id, n.charge_id) IN (SELECT x.account_id, x.charge_id FROM indexed x)
        ORDER BY n.i
    )
    -- Each added key as one text (account, then the id; ids hold no control character).
    SELECT array_agg(x.account_id || chr(31) || x.charge_id) INTO added FROM indexed x;
    -- Per position: nothing for an id this call added at that position, else
    -- the facts stored under it (a new snapshot sees what conflicted).
    RETURN QUERY
    SELECT n.i::integer, c.payload, c.recorded_at, NULL::bigint
    FROM (SELECT u.account_id, u.charge_id, u.i,
                 min(u.i) OVER (PARTITION BY u.account_id, u.charge_id) AS first
          FROM unnest(p_account_ids, p_charge_ids) WITH ORDINALITY AS u(account_id, charge_id, i)) n
    JOIN ledger_charge_index c ON c.account_id = n.account_id AND c.charge_id = n.charge_id
    WHERE n.i <> n.first OR NOT (n.account_id || chr(31) || n.charge_id) = ANY (coalesce(added, '{}'))
    ORDER BY n.i;
END;
$$;

-- The same call without the typed facts, as earlier releases make it (their
-- processes may still run during an upgrade): the facts are read from the
-- payloads (ledger_payload_facts, charge_facts.sql).
CREATE OR REPLACE FUNCTION ledger_intake_account_charges(
    p_charge_ids text[], p_account_ids text[], p_originators uuid[], p_hashes text[],
    p_payloads text[], p_states bytea[], p_opened_states bytea[], p_recorded_at timestamptz,
    p_topic text, p_opened_topic text, p_catalogue_id uuid, p_catalogue_version bigint
) RETURNS TABLE(idx integer, known_payload text, known_recorded_at timestamptz, notification_id bigint)
LANGUAGE sql AS $$
    SELECT r.* FROM ledger_payload_facts(p_payloads) f, ledger_intake_account_charges(
        p_charge_ids, p_account_ids, p_originators, p_hashes, p_payloads, p_states, p_opened_states,
        p_recorded_at, p_topic, p_opened_topic, p_catalogue_id, p_catalogue_version,
        f.users, f.occurred, f.costs, f.tokens) r
$$;

CREATE OR REPLACE FUNCTION ledger_sequence(
    p_limit integer, p_topic text, p_opened_topic text, p_wait boolean
) RETURNS integer
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    moved integer;
BEGIN
    IF NOT EXISTS (SELECT FROM ledger_intake) THEN
        RETURN 0;
    END IF;
    -- Background sequencers skip a turn while another one runs; a reader that
    -- must see every acknowledged charge waits for it instead.
    IF NOT p_wait AND NOT pg_try_advisory_xact_lock(ledger_sequencer_lock_key()) THEN
        RETURN -1;
    END IF;
    LOCK TABLE ledger_events IN EXCLUSIVE MODE;
    WITH taken AS (
        DELETE FROM ledger_intake q
        WHERE q.seq IN (SELECT p.seq FROM ledger_intake p ORDER BY p.seq LIMIT p_limit)
        RETURNING q.seq, q.originator_id, q.state, q.opened_state
    ), streams AS (
        -- An account's Opened state travels with its first charge of each
        -- intake call (empty on the others); any one of them will do.
        SELECT t.originator_id AS originator, min(t.seq) AS first_seq,
               (array_agg(t.opened_state ORDER BY t.seq) FILTER (WHERE length(t.opened_state) > 0))[1] AS opened,
               ledger_stream_version(t.originator_id) AS base
        FROM taken t GROUP BY t.originator_id
    ), numbered AS (
        SELECT t.seq, 1 AS kind, t.originator_id, p_topic AS topic, t.state,
               greatest(s.base, 1) + row_number() OVER (PARTITION BY t.originator_id ORDER BY t.seq) AS version
        FROM taken t JOIN streams s ON s.originator = t.originator_id
        UNION ALL
        SELECT s.first_seq, 0, s.originator, p_opened_topic, s.opened, 1
        FROM streams s WHERE s.base = 0
    ), stored AS (
        INSERT INTO ledger_events (originator_id, originator_version, topic, state)
        SELECT r.originator_id, r.version, r.topic, r.state FROM numbered r ORDER BY r.seq, r.kind
    )
    SELECT count(*) INTO moved FROM taken;
    -- As the library's recorder does, for subscribers (delivered at commit).
    NOTIFY ledger_events;
    RETURN moved;
END;
$$;
