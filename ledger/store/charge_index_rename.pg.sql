-- The earlier releases' global charge-id table becomes the per-account index
-- in place: a rename and a new primary key, so a large index is not copied.
-- Writers of the earlier release are held off by the rename's lock; their
-- next write meets the guard created after this (charge_index_guard.pg.sql).
LOCK TABLE ledger_charge_ids IN ACCESS EXCLUSIVE MODE;
ALTER TABLE ledger_charge_ids RENAME TO ledger_charge_index;
ALTER TABLE ledger_charge_index DROP CONSTRAINT ledger_charge_ids_pkey;
ALTER TABLE ledger_charge_index ADD CONSTRAINT ledger_charge_index_pkey PRIMARY KEY (account_id, charge_id);
