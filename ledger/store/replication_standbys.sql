-- The standbys streaming from this server, as pg_stat_replication shows them to the connecting role
-- (a role without pg_monitor / pg_read_all_stats sees each walsender's pid and nothing else: NULLs).
-- Lag in bytes is measured against this server's current WAL position, on a primary only
-- (pg_current_wal_lsn() raises during recovery; a cascading standby's own lag is shown in seconds).
SELECT
    application_name,
    host(client_addr) AS client_addr,
    state,
    sync_state,
    EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag_seconds,
    CASE WHEN pg_is_in_recovery() OR replay_lsn IS NULL THEN NULL
         ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint END AS replay_lag_bytes,
    CASE WHEN pg_is_in_recovery() OR write_lsn IS NULL THEN NULL
         ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), write_lsn)::bigint END AS write_lag_bytes
FROM pg_stat_replication
ORDER BY application_name, pid
