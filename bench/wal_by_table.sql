-- This database's WAL between two positions, per table: its records, their
-- bytes and the full-page images among them. A table's indexes count with it
-- (the index entries a row costs); records that touch no relation of this
-- database (commits, transaction records) count as "(commits)", for the
-- transactions that touched one. The totals are the rows' sums.
-- Parameters: the two positions, the LIKE pattern of this database's block
-- references and the pattern that takes a relation's file node out of one.
WITH r AS (
    SELECT xid::text AS xid, record_length, fpi_length, coalesce(block_ref, '') AS block_ref
    FROM pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn)
), touching AS (
    SELECT DISTINCT xid FROM r WHERE xid <> '0' AND block_ref LIKE %(pattern)s
), ours AS (
    SELECT record_length, fpi_length, (regexp_match(block_ref, %(node)s))[1]::oid AS filenode
    FROM r WHERE block_ref LIKE %(pattern)s OR xid IN (SELECT xid FROM touching)
), named AS (
    SELECT o.record_length, o.fpi_length, coalesce(t.relname, c.relname, '(commits)') AS name
    FROM ours o
    LEFT JOIN pg_class c ON o.filenode IS NOT NULL AND pg_relation_filenode(c.oid) = o.filenode
    LEFT JOIN pg_index i ON i.indexrelid = c.oid
    LEFT JOIN pg_class t ON t.oid = i.indrelid
)
SELECT name, count(*), sum(record_length)::bigint, sum(fpi_length)::bigint
FROM named GROUP BY name ORDER BY sum(record_length - fpi_length) DESC
