-- Who holds a claim, beside its lease (next_attempt): the instance (stable across restarts of
-- one deployment), its boot (fresh per start) and the claim (per claim batch of that boot).
-- A restarted process takes back its previous boot's claims at once; a task attempt finishes
-- only while its own claim holds; a lease is renewed only for claims of the renewing boot.
ALTER TABLE cdr_queue ADD COLUMN claimed_by TEXT;
ALTER TABLE cdr_queue ADD COLUMN claim_boot TEXT;
ALTER TABLE cdr_queue ADD COLUMN claim_seq INTEGER;
ALTER TABLE tasks ADD COLUMN claimed_by TEXT;
ALTER TABLE tasks ADD COLUMN claim_boot TEXT;
ALTER TABLE tasks ADD COLUMN claim_seq INTEGER;
