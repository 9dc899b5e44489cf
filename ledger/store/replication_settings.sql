-- What decides whether a commit waits for a standby, read in the ledger's own session
-- (synchronous_commit may be set per role, database or URL), and whether this role may see
-- the standbys' state (pg_monitor includes pg_read_all_stats).
SELECT
    pg_is_in_recovery() AS in_recovery,
    current_setting('synchronous_commit') AS synchronous_commit,
    current_setting('synchronous_standby_names') AS synchronous_standby_names,
    current_user AS role_name,
    pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_standbys
