-- One budget scope's usage: folded spend plus the charges not yet folded
-- (net of reversals), and the active holds. The store repeats this once per
-- scope (parameters suffixed _<n>) and joins the copies with UNION ALL, so
-- every scope of one read shares one snapshot. A NULL parameter means "any":
-- the user, and the period's first and next billing dates and instants.
SELECT :n_N AS n,
       f.cost + u.cost AS spent_micros, f.tokens + u.tokens AS spent_tokens,
       h.micros AS held_micros, h.tokens AS held_tokens, u.rows AS unfolded
FROM (SELECT coalesce(sum(s.cost_micros), 0) AS cost, coalesce(sum(s.total_tokens), 0) AS tokens
      FROM ledger_spend s
      WHERE s.account_id = :a_N AND (:u_N IS NULL OR s.user_id = :u_N)
        AND (:d0_N IS NULL OR s.billing_date >= :d0_N) AND (:d1_N IS NULL OR s.billing_date < :d1_N)) f,
     (SELECT coalesce(sum(c.cost_micros), 0) AS cost, coalesce(sum(c.total_tokens), 0) AS tokens,
             count(*) AS rows
      FROM ledger_charge_index c
      WHERE c.account_id = :a_N AND NOT c.folded AND c.reversed_at IS NULL
        AND (:u_N IS NULL OR c.user_id = :u_N)
        AND (:t0_N IS NULL OR c.occurred_at >= :t0_N) AND (:t1_N IS NULL OR c.occurred_at < :t1_N)) u,
     (SELECT coalesce(sum(h.estimate_micros), 0) AS micros, coalesce(sum(h.estimate_tokens), 0) AS tokens
      FROM ledger_holds h
      WHERE h.account_id = :a_N AND h.state = 'held' AND h.expires_at > :now
        AND (:u_N IS NULL OR h.user_id = :u_N)) h
