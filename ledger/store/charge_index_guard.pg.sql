-- The earlier releases' global charge-id table, kept as a guard: the same
-- columns and key (so their SQL still plans), and a trigger that refuses
-- every write with a message naming the upgrade. Their write fails whole,
-- so a process of an earlier release records nothing.
CREATE TABLE IF NOT EXISTS ledger_charge_ids (
    charge_id varchar(256) PRIMARY KEY,
    account_id varchar(256) NOT NULL,
    payload_hash varchar(64) NOT NULL,
    payload text NOT NULL,
    recorded_at timestamptz NOT NULL,
    reversed_at timestamptz
);

CREATE OR REPLACE FUNCTION ledger_charge_ids_retired() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'this ledger keeps charge ids per account (table ledger_charge_index); '
        'this process runs an earlier release that checks them globally: upgrade it. Nothing was stored.'
        USING ERRCODE = 'P0001', HINT = 'See docs/UPGRADING.md of llm-usage-ledger.';
END;
$$;

DROP TRIGGER IF EXISTS ledger_charge_ids_retired ON ledger_charge_ids;
CREATE TRIGGER ledger_charge_ids_retired
    BEFORE INSERT OR UPDATE OR DELETE ON ledger_charge_ids
    FOR EACH ROW EXECUTE FUNCTION ledger_charge_ids_retired();
