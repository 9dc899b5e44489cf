-- The earlier releases' global charge-id table, kept as a guard: the same
-- columns (so their SQL still prepares), and triggers that make every write
-- fail. SQLite's RAISE() reports a constraint error, which earlier releases
-- retry as a race; a call to a function that does not exist fails with an
-- operational error whose text is the function's name, so that name is the
-- message. Their write fails whole: an earlier release records nothing.
CREATE TABLE IF NOT EXISTS ledger_charge_ids (
    charge_id VARCHAR(256) NOT NULL PRIMARY KEY,
    account_id VARCHAR(256) NOT NULL,
    payload_hash VARCHAR(64) NOT NULL,
    payload TEXT NOT NULL,
    recorded_at DATETIME NOT NULL,
    reversed_at DATETIME
);
CREATE TRIGGER IF NOT EXISTS ledger_charge_ids_retired_insert BEFORE INSERT ON ledger_charge_ids
BEGIN
    SELECT charge_ids_are_per_account_now_upgrade_this_ledger_process();
END;
CREATE TRIGGER IF NOT EXISTS ledger_charge_ids_retired_update BEFORE UPDATE ON ledger_charge_ids
BEGIN
    SELECT charge_ids_are_per_account_now_upgrade_this_ledger_process();
END;
