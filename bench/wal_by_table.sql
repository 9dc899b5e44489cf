-- This database's WAL between two positions, bytes without full-page images
-- per table: a table's indexes count with it (the index entries a row costs),
-- and records that touch no relation of it (commits, transaction records)
-- count as "(commits)", for transactions that touched one. Parameters: the
-- two positions and the LIKE pattern of this database's block references.
WITH r AS (
    SELECT xid::text AS xid, record_length - fpi_length AS bytes, coalesce(block_ref, '') AS block_ref
    FROM pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn)
), touching AS (
    SELECT DISTINCT xid FROM r WHERE xid <> '0' AND block_ref LIKE %(pattern)s
), ours AS (
    SELECT bytes, (regexp_match(block_ref, %(node)s))[1]::oid AS filenode
    FROM r WHERE block_ref LIKE %(pattern)s OR xid IN (SELECT xid FROM touching)
), named AS (
    SELECT o.bytes, coalesce(t.relname, c.relname, '(commits)') AS name
    FROM ours o
    LEFT JOIN pg_class c ON o.filenode IS NOT NULL AND pg_relation_filenode(c.oid) = o.filenode
    LEFT JOIN pg_index i ON i.indexrelid = c.oid
    LEFT JOIN pg_class t ON t.oid = i.indrelid
)
SELECT name, sum(bytes)::bigint FROM named GROUP BY name ORDER BY 2 DESC
