-- One digest of what the current schema holds, for the schema stamp
-- (ledger/store/schema_stamp.py): every function (signature, body, settings),
-- every relation's columns (tables, indexes, sequences, with their types and
-- NOT NULL), and every trigger. Any DDL here since the stamp was written, by
-- this release or another, changes it.
SELECT md5(
    coalesce((
        SELECT string_agg(f.line, E'\n' ORDER BY f.line) FROM (
            SELECT p.oid::regprocedure::text || ' ' || md5(p.prosrc) || ' '
                   || coalesce(array_to_string(p.proconfig, ','), '') AS line
            FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace
        ) f), '')
    || E'\n' || coalesce((
        SELECT string_agg(c.line, E'\n' ORDER BY c.line) FROM (
            SELECT r.relname || ' ' || r.relkind::text || ' ' || a.attnum || ' ' || a.attname || ' '
                   || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull AS line
            FROM pg_class r JOIN pg_attribute a ON a.attrelid = r.oid
            WHERE r.relnamespace = current_schema()::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
        ) c), '')
    || E'\n' || coalesce((
        SELECT string_agg(t.line, E'\n' ORDER BY t.line) FROM (
            SELECT g.tgname || ' ' || g.tgrelid::regclass::text AS line
            FROM pg_trigger g JOIN pg_class r ON r.oid = g.tgrelid
            WHERE r.relnamespace = current_schema()::regnamespace AND NOT g.tgisinternal
        ) t), '')
)
