-- pgbench script (bench/intake_sql.py fills in the placeholders): one charge
-- per transaction through the ledger's own PostgreSQL intake function,
-- called exactly as the ledger's appender calls it for a single charge (its
-- prepared statement, the parameters of a real record_charge call), with the
-- charge id and the account (of the opened ones) varying as in traffic.
\set bench_cid random(1000000000000000, 9999999999999999)
\set bench_acct random(0, @LAST_ACCOUNT@)
\set bench_acct1 :bench_acct + 1
@CALL@;
