-- The typed facts budgets sum (user, occurred-at, cost, total tokens), read
-- from charges' payloads, in input order: what the 12-argument forms of both
-- write paths (append.sql, intake.sql) pass on for callers of an earlier
-- release, which send the payloads alone. It costs a JSON parse per charge.
CREATE OR REPLACE FUNCTION ledger_payload_facts(
    p_payloads text[],
    OUT users text[], OUT occurred timestamptz[], OUT costs bigint[], OUT tokens bigint[]
)
LANGUAGE sql STABLE AS $$
    SELECT array_agg(u.j->>'user_id' ORDER BY u.o),
           array_agg((u.j->>'occurred_at')::timestamptz ORDER BY u.o),
           array_agg((u.j->>'cost_micros')::bigint ORDER BY u.o),
           array_agg((u.j->>'total_tokens')::bigint ORDER BY u.o)
    FROM unnest(p_payloads) WITH ORDINALITY AS t(p, o), LATERAL (SELECT t.p::jsonb AS j, t.o AS o) u
$$;
