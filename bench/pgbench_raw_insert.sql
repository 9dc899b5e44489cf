-- pgbench script (bench/pgbench.py fills in the placeholders): one charge-sized
-- row per transaction into the raw baseline's table (bench/baselines.py:
-- bigserial id, stream uuid, version, topic, the JSON state of a
-- ChargeRecorded event), its charge id and account varying as in traffic.
\set bench_cid random(1000000000000000, 9999999999999999)
\set bench_acct random(0, @LAST_ACCOUNT@)
\set bench_acct1 :bench_acct + 1
INSERT INTO bench_raw_events (originator_id, originator_version, topic, state)
VALUES (@ORIGINATOR@, :bench_cid::bigint, @TOPIC@, convert_to(@STATE@, 'UTF8'));
