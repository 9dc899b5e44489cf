-- Reservations and captures on PostgreSQL, each one call (and so one round
-- trip and one commit) on the common path. ledger/store/reservations_pg.py
-- calls them; the Python path in ledger/reservations.py is the reference for
-- every rule, and takes over whenever these answer 'decide'.
--
-- Periods arrive as billing dates and UTC instants computed by the caller
-- (the same ones the Python path uses), for a day and a month budget.

-- Each budget of an account (of the reservation's scope when p_user_id is
-- given, else all of them), with its spent and held now. Each budget's
-- figures come from ONE statement, so they share a snapshot: a fold or a
-- capture committing meanwhile is seen whole or not at all. Called after
-- the budgets are locked, its statements see every hold committed before.
CREATE OR REPLACE FUNCTION ledger_budget_usage(
    p_account_id text, p_user_id text, p_scope_only boolean, p_now timestamptz,
    p_day0 date, p_day1 date, p_day_t0 timestamptz, p_day_t1 timestamptz,
    p_month0 date, p_month1 date, p_month_t0 timestamptz, p_month_t1 timestamptz
) RETURNS TABLE(
    budget_id text, user_id text, unit text, limit_value bigint, period text, mode text, thresholds text,
    version bigint, period_start date,
    spent_micros bigint, spent_tokens bigint, held_micros bigint, held_tokens bigint, unfolded bigint
)
-- Plain index scans, not bitmap scans: a fold marks rows folded by writing
-- new row versions, so the partial index of unfolded rows keeps an entry for
-- each folded row until VACUUM. An index scan marks such entries dead as it
-- passes them (the next scan skips them); a bitmap scan never does, and the
-- sum then visits every charge the account ever folded (measured: 8,092
-- entries for 12 live rows, 0.5 ms against 0.08 ms).
LANGUAGE plpgsql SET enable_bitmapscan = off AS $$
DECLARE
    b record;
    d0 date; d1 date; t0 timestamptz; t1 timestamptz;
BEGIN
    FOR b IN SELECT x.* FROM ledger_budgets x
             WHERE x.account_id = p_account_id
               AND (NOT p_scope_only OR x.user_id IS NULL OR x.user_id = p_user_id)
             ORDER BY x.budget_id
    LOOP
        IF b.period = 'day' THEN
            d0 := p_day0; d1 := p_day1; t0 := p_day_t0; t1 := p_day_t1;
        ELSIF b.period = 'month' THEN
            d0 := p_month0; d1 := p_month1; t0 := p_month_t0; t1 := p_month_t1;
        ELSE
            d0 := NULL; d1 := NULL; t0 := NULL; t1 := NULL;
        END IF;
        budget_id := b.budget_id; user_id := b.user_id; unit := b.unit; limit_value := b.limit_value;
        period := b.period; mode := b.mode; thresholds := b.thresholds; version := b.version;
        period_start := d0;
        SELECT f.cost + u.cost, f.tokens + u.tokens, h.micros, h.tokens, u.n
          INTO spent_micros, spent_tokens, held_micros, held_tokens, unfolded
          FROM (SELECT coalesce(sum(s.cost_micros), 0)::bigint AS cost,
                       coalesce(sum(s.total_tokens), 0)::bigint AS tokens
                FROM ledger_spend s
                WHERE s.account_id = p_account_id AND (b.user_id IS NULL OR s.user_id = b.user_id)
                  AND (d0 IS NULL OR (s.billing_date >= d0 AND s.billing_date < d1))) f,
               (SELECT coalesce(sum(c.cost_micros), 0)::bigint AS cost,
                       coalesce(sum(c.total_tokens), 0)::bigint AS tokens, count(*) AS n
                FROM ledger_charge_index c
                WHERE c.account_id = p_account_id AND NOT c.folded AND c.reversed_at IS NULL
                  AND (b.user_id IS NULL OR c.user_id = b.user_id)
                  AND (t0 IS NULL OR (c.occurred_at >= t0 AND c.occurred_at < t1))) u,
               (SELECT coalesce(sum(h.estimate_micros), 0)::bigint AS micros,
                       coalesce(sum(h.estimate_tokens), 0)::bigint AS tokens
                FROM ledger_holds h
                WHERE h.account_id = p_account_id AND h.state = 'held' AND h.expires_at > p_now
                  AND (b.user_id IS NULL OR h.user_id = b.user_id)) h;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Reserve: lock the budgets of the scope, read their usage,
-- and insert the hold when every hard cost or token budget can take the
-- estimate. Answers one row per budget ('budget'), then 'granted', 'known'
-- (the id was reserved before: the caller reads that reservation) or
-- 'decide' (a refusal, a missing estimate, or a credits budget: nothing was
-- inserted, and the caller's Python path decides in its own transaction).
CREATE OR REPLACE FUNCTION ledger_reserve(
    p_reservation_id text, p_account_id text, p_user_id text,
    p_estimate_micros bigint, p_estimate_tokens bigint, p_now timestamptz, p_expires_at timestamptz,
    p_day0 date, p_day1 date, p_day_t0 timestamptz, p_day_t1 timestamptz,
    p_month0 date, p_month1 date, p_month_t0 timestamptz, p_month_t1 timestamptz
) RETURNS TABLE(
    outcome text, budget_id text, user_id text, unit text, limit_value bigint, period text, mode text,
    thresholds text, version bigint, period_start date,
    spent_micros bigint, spent_tokens bigint, held_micros bigint, held_tokens bigint, unfolded bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    k record;
    undecided boolean := false;
    waited boolean := false;
    estimate bigint;
    used bigint;
BEGIN
    IF EXISTS (SELECT FROM ledger_holds x WHERE x.reservation_id = p_reservation_id) THEN
        outcome := 'known';
        RETURN NEXT;
        RETURN;
    END IF;
    -- Each budget's advisory lock, in the order of their keys (as
    -- ledger/store/budgets.py takes them on the Python path, so two
    -- reservations never wait for each other in a cycle): reservations on a
    -- budget take turns, and no row is written to lock it.
    FOR k IN SELECT DISTINCT hashtext(y.budget_id) AS h FROM ledger_budgets y
             WHERE y.account_id = p_account_id AND (y.user_id IS NULL OR y.user_id = p_user_id)
             ORDER BY 1
    LOOP
        IF NOT pg_try_advisory_xact_lock(@LockKey.BUDGET@, k.h) THEN
            waited := true;
            PERFORM pg_advisory_xact_lock(@LockKey.BUDGET@, k.h);
        END IF;
    END LOOP;
    FOR r IN SELECT * FROM ledger_budget_usage(
        p_account_id, p_user_id, true, p_now, p_day0, p_day1, p_day_t0, p_day_t1,
        p_month0, p_month1, p_month_t0, p_month_t1)
    LOOP
        outcome := 'budget'; budget_id := r.budget_id; user_id := r.user_id; unit := r.unit;
        limit_value := r.limit_value; period := r.period; mode := r.mode; thresholds := r.thresholds;
        version := r.version; period_start := r.period_start; spent_micros := r.spent_micros;
        spent_tokens := r.spent_tokens; held_micros := r.held_micros; held_tokens := r.held_tokens;
        unfolded := r.unfolded;
        RETURN NEXT;
        IF r.mode = 'hard' THEN
            IF r.unit = 'credits' THEN
                undecided := true;
            ELSE
                estimate := CASE WHEN r.unit = 'tokens' THEN p_estimate_tokens ELSE p_estimate_micros END;
                used := CASE WHEN r.unit = 'tokens' THEN r.spent_tokens + r.held_tokens
                             ELSE r.spent_micros + r.held_micros END;
                IF estimate IS NULL OR used + estimate > r.limit_value THEN
                    undecided := true;
                END IF;
            END IF;
        END IF;
    END LOOP;
    budget_id := NULL; user_id := NULL; unit := NULL; limit_value := NULL; period := NULL; mode := NULL;
    thresholds := NULL; version := NULL; period_start := NULL; spent_micros := NULL; spent_tokens := NULL;
    held_micros := NULL; held_tokens := NULL; unfolded := NULL;
    IF undecided THEN
        outcome := 'decide';
        RETURN NEXT;
        RETURN;
    END IF;
    -- The budgets' locks go at COMMIT; with a synchronous commit they would
    -- be held through the WAL flush, so reservations on one budget would each
    -- wait for the previous one's fsync. So when this call had to wait for a
    -- lock (reservations on the budget are queueing), its commit does not
    -- wait for the flush: it answers 'granted', and the caller then flushes
    -- (ledger_flush) with the locks released, sharing the fsync with every
    -- other writer, and returns only after it. A later transaction that saw
    -- this hold commits after it in the WAL, so its own durable commit makes
    -- this hold durable too. When no lock was contended the commit is
    -- synchronous and the answer is 'committed': durable in one round trip.
    IF waited THEN
        PERFORM set_config('synchronous_commit', 'off', true);
        outcome := 'granted';
    ELSE
        outcome := 'committed';
    END IF;
    INSERT INTO ledger_holds (reservation_id, account_id, user_id, estimate_micros, estimate_tokens,
                              created_at, expires_at, state, charge_id)
        VALUES (p_reservation_id, p_account_id, p_user_id, p_estimate_micros, p_estimate_tokens,
                p_now, p_expires_at, 'held', p_reservation_id);
    RETURN NEXT;
END;
$$;

-- Capture: lock the hold, take the charge in through the intake and mark the
-- hold captured, in one transaction. Answers 'unknown',
-- 'released', 'captured' (by another charge id: hold_charge_id names it),
-- 'stale' (the price catalogue moved: nothing stored, re-cost and call
-- again), 'decide' (the id was already in the index while the hold was still
-- held: the caller's Python path settles it, checking the facts), or
-- 'recorded' (the intake's answer in idx..notification_id).
DROP FUNCTION IF EXISTS ledger_capture(
    text, timestamptz, text[], text[], uuid[], text[], text[], bytea[], bytea[], timestamptz, text, text, uuid,
    bigint, date, date, timestamptz, timestamptz, date, date, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS ledger_capture(
    text, timestamptz, text[], text[], uuid[], text[], text[], bytea[], bytea[], timestamptz, text, text, uuid,
    bigint);
CREATE OR REPLACE FUNCTION ledger_capture(
    p_reservation_id text, p_now timestamptz,
    p_charge_ids text[], p_account_ids text[], p_originators uuid[], p_hashes text[],
    p_payloads text[], p_states bytea[], p_opened_states bytea[], p_recorded_at timestamptz,
    p_topic text, p_opened_topic text, p_catalogue_id uuid, p_catalogue_version bigint,
    p_user_ids text[], p_occurred_ats timestamptz[], p_costs bigint[], p_tokens bigint[]
) RETURNS TABLE(
    outcome text, hold_charge_id text, idx integer, known_payload text, known_recorded_at timestamptz,
    notification_id bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    h record;
    taken record;
BEGIN
    SELECT x.* INTO h FROM ledger_holds x WHERE x.reservation_id = p_reservation_id FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'unknown'; RETURN NEXT; RETURN;
    END IF;
    hold_charge_id := h.charge_id;
    IF h.state = 'released' THEN
        outcome := 'released'; RETURN NEXT; RETURN;
    END IF;
    IF h.state = 'captured' AND h.charge_id <> p_charge_ids[1] THEN
        outcome := 'captured'; RETURN NEXT; RETURN;
    END IF;
    SELECT * INTO taken FROM ledger_intake_account_charges(
        p_charge_ids, p_account_ids, p_originators, p_hashes, p_payloads, p_states, p_opened_states,
        p_recorded_at, p_topic, p_opened_topic, p_catalogue_id, p_catalogue_version,
        p_user_ids, p_occurred_ats, p_costs, p_tokens);
    idx := taken.idx; known_payload := taken.known_payload; known_recorded_at := taken.known_recorded_at;
    notification_id := taken.notification_id;
    IF taken.idx = 0 THEN
        outcome := 'stale'; RETURN NEXT; RETURN;
    END IF;
    IF h.state = 'held' AND taken.known_payload IS NOT NULL THEN
        outcome := 'decide'; RETURN NEXT; RETURN;
    END IF;
    IF h.state = 'held' THEN
        UPDATE ledger_holds SET state = 'captured', charge_id = p_charge_ids[1], settled_at = p_now
            WHERE reservation_id = p_reservation_id;
    END IF;
    outcome := 'recorded';
    RETURN NEXT;
END;
$$;

-- Wait until the WAL is flushed past everything this session committed: a
-- transactional message writes a record (an id and a bare commit alone do
-- not), so this commit waits for the flush, and its record follows the
-- earlier ones. It changes no table; logical decoders may skip the prefix.
CREATE OR REPLACE FUNCTION ledger_flush() RETURNS void
LANGUAGE sql AS 'SELECT pg_logical_emit_message(true, ''ledger_flush'', '''')::text::void';
