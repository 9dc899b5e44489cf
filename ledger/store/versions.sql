-- How PostgreSQL numbers an account's stream: the rule both write paths
-- (append.sql, intake.sql) use. An account's next event follows the highest
-- version in its events or its snapshots (an account whose events compaction
-- pruned continues after its snapshot); 0 means it has no stream yet, so its
-- Opened event takes version 1 and its first charge version 2.
CREATE OR REPLACE FUNCTION ledger_stream_version(p_originator uuid) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN greatest(
        (SELECT max(e.originator_version) FROM ledger_events e WHERE e.originator_id = p_originator),
        (SELECT max(s.originator_version) FROM ledger_snapshots s WHERE s.originator_id = p_originator),
        0);
END;
$$;
