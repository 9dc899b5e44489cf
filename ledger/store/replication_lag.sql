-- How far a server the ledger reads from is behind its primary, read on that server itself.
-- Not in recovery: not a standby, nothing to be behind. Every received change replayed: 0 s,
-- however long ago the primary last wrote (the replay timestamp alone would grow while it is idle).
SELECT
    pg_is_in_recovery() AS in_recovery,
    CASE WHEN NOT pg_is_in_recovery() THEN NULL
         WHEN pg_last_wal_receive_lsn() IS NOT NULL AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0
         ELSE GREATEST(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)::float8 END AS lag_seconds,
    CASE WHEN pg_is_in_recovery() AND pg_last_wal_receive_lsn() IS NOT NULL
         THEN GREATEST(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint END AS lag_bytes
