-- The locked PostgreSQL write path: lock, look up, number, insert; one call
-- per batch, holding the events table's EXCLUSIVE lock through COMMIT.
--
-- Charges are usually taken in by ledger_intake_account_charges (intake.sql);
-- batches large enough to spread the lock's wait over many charges append
-- here directly, sparing them the intake's second write. Its appends take the
-- same lock as the sequencer, so both paths share the store. Charge ids are
-- keyed by (account, charge id), as in the intake.
--
-- Set-based: the known keys in one probe, one version lookup per
-- distinct account (ledger_stream_version, versions.sql), and one INSERT each for the
-- index rows and the events, numbered per account with row_number() in input
-- order. The events are inserted in input order (an account's Opened first),
-- so notification ids follow versions. Per input position it returns the
-- stored facts of an id already known (from the index, or from an earlier
-- position of the same batch), else the new event's notification id.
CREATE OR REPLACE FUNCTION ledger_append_account_charges(
    p_charge_ids text[], p_account_ids text[], p_originators uuid[], p_hashes text[],
    p_payloads text[], p_states bytea[], p_opened_states bytea[], p_recorded_at timestamptz,
    p_topic text, p_opened_topic text, p_catalogue_id uuid, p_catalogue_version bigint,
    p_user_ids text[], p_occurred_ats timestamptz[], p_costs bigint[], p_tokens bigint[]
) RETURNS TABLE(idx integer, known_payload text, known_recorded_at timestamptz, notification_id bigint)
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    v bigint;
BEGIN
    LOCK TABLE ledger_events IN EXCLUSIVE MODE;
    -- Costs were computed with catalogue version p_catalogue_version: if a
    -- price was set since, append nothing and say so (idx 0) so the caller
    -- re-costs with the new catalogue.
    SELECT coalesce(max(e.originator_version), 0) INTO v FROM ledger_events e
        WHERE e.originator_id = p_catalogue_id;
    IF v <> p_catalogue_version THEN
        idx := 0; known_payload := NULL; known_recorded_at := NULL; notification_id := v;
        RETURN NEXT;
        RETURN;
    END IF;
    IF cardinality(p_charge_ids) = 1 THEN
        -- One charge (the common call): the same steps, without the set machinery.
        idx := 1;
        SELECT c.payload, c.recorded_at INTO known_payload, known_recorded_at
            FROM ledger_charge_index c
            WHERE c.account_id = p_account_ids[1] AND c.charge_id = p_charge_ids[1];
        IF NOT FOUND THEN
            v := ledger_stream_version(p_originators[1]);
            IF v = 0 THEN
                INSERT INTO ledger_events (originator_id, originator_version, topic, state)
                    VALUES (p_originators[1], 1, p_opened_topic, p_opened_states[1]);
                v := 1;
            END IF;
            INSERT INTO ledger_charge_index (account_id, charge_id, payload_hash, payload, recorded_at,
                                             user_id, occurred_at, cost_micros, total_tokens)
                VALUES (p_account_ids[1], p_charge_ids[1], p_hashes[1], p_payloads[1], p_recorded_at,
                        p_user_ids[1], p_occurred_ats[1], p_costs[1], p_tokens[1]);
            INSERT INTO ledger_events (originator_id, originator_version, topic, state)
                VALUES (p_originators[1], v + 1, p_topic, p_states[1])
                RETURNING ledger_events.id INTO notification_id;
        END IF;
        RETURN NEXT;
    ELSE
    RETURN QUERY
    WITH input AS (
        SELECT t.i::integer AS i, t.charge_id, t.account_id, t.originator, t.hash, t.payload, t.state,
               t.user_id, t.occurred_at, t.cost, t.tokens,
               min(t.i::integer) OVER (PARTITION BY t.account_id, t.charge_id) AS first,
               min(t.i::integer) OVER (PARTITION BY t.originator) AS account_first
        FROM unnest(p_charge_ids, p_account_ids, p_originators, p_hashes, p_payloads, p_states,
                    p_user_ids, p_occurred_ats, p_costs, p_tokens)
             WITH ORDINALITY AS t(charge_id, account_id, originator, hash, payload, state,
                                  user_id, occurred_at, cost, tokens, i)
    ), known AS (
        SELECT c.account_id, c.charge_id, c.payload, c.recorded_at FROM ledger_charge_index c
        WHERE (c.account_id, c.charge_id) IN (
            SELECT w.account_id, w.charge_id FROM unnest(p_account_ids, p_charge_ids) AS w(account_id, charge_id))
    ), fresh AS (
        SELECT n.* FROM input n
        WHERE n.i = n.first AND NOT EXISTS (
            SELECT FROM known k WHERE k.account_id = n.account_id AND k.charge_id = n.charge_id)
    ), streams AS (
        SELECT f.originator, min(f.i) AS first_i, min(f.account_first) AS account_first,
               ledger_stream_version(f.originator) AS base
        FROM fresh f GROUP BY f.originator
    ), numbered AS (
        SELECT f.i, 1 AS kind, f.originator, p_topic AS topic, f.state,
               greatest(s.base, 1) + row_number() OVER (PARTITION BY f.originator ORDER BY f.i) AS version
        FROM fresh f JOIN streams s ON s.originator = f.originator
        UNION ALL
        SELECT s.first_i, 0, s.originator, p_opened_topic, p_opened_states[s.account_first], 1
        FROM streams s WHERE s.base = 0
    ), indexed AS (
        INSERT INTO ledger_charge_index (account_id, charge_id, payload_hash, payload, recorded_at,
                                         user_id, occurred_at, cost_micros, total_tokens)
        SELECT f.account_id, f.charge_id, f.hash, f.payload, p_recorded_at,
               f.user_id, f.occurred_at, f.cost, f.tokens
        FROM fresh f ORDER BY f.i
    ), stored AS (
        INSERT INTO ledger_events (originator_id, originator_version, topic, state)
        SELECT r.originator, r.version, r.topic, r.state
        FROM (SELECT * FROM numbered ORDER BY i, kind) r
        RETURNING ledger_events.id, ledger_events.originator_id, ledger_events.originator_version
    )
    SELECT n.i,
           coalesce(k.payload, CASE WHEN n.i <> n.first THEN p_payloads[n.first] END),
           coalesce(k.recorded_at, CASE WHEN n.i <> n.first THEN p_recorded_at END),
           e.id
    FROM input n
    LEFT JOIN known k ON k.account_id = n.account_id AND k.charge_id = n.charge_id
    LEFT JOIN numbered m ON m.i = n.i AND m.kind = 1
    LEFT JOIN stored e ON e.originator_id = m.originator AND e.originator_version = m.version
    ORDER BY n.i;
    END IF;
    -- As the library's recorder does, for subscribers (delivered at commit).
    NOTIFY ledger_events;
END;
$$;

-- The same call without the typed facts, as earlier releases make it (their
-- processes may still run during an upgrade): the facts are read from the
-- payloads (ledger_payload_facts, charge_facts.sql).
CREATE OR REPLACE FUNCTION ledger_append_account_charges(
    p_charge_ids text[], p_account_ids text[], p_originators uuid[], p_hashes text[],
    p_payloads text[], p_states bytea[], p_opened_states bytea[], p_recorded_at timestamptz,
    p_topic text, p_opened_topic text, p_catalogue_id uuid, p_catalogue_version bigint
) RETURNS TABLE(idx integer, known_payload text, known_recorded_at timestamptz, notification_id bigint)
LANGUAGE sql AS $$
    SELECT r.* FROM ledger_payload_facts(p_payloads) f, ledger_append_account_charges(
        p_charge_ids, p_account_ids, p_originators, p_hashes, p_payloads, p_states, p_opened_states,
        p_recorded_at, p_topic, p_opened_topic, p_catalogue_id, p_catalogue_version,
        f.users, f.occurred, f.costs, f.tokens) r
$$;
