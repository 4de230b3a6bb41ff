-- An operator's resume or cancel of a rollout, asked through a portal
-- process that does not drive it: the driver carries it out at its next
-- tick and clears it in the same transaction (ARCHITECTURE.md, several
-- portals on one database).
ALTER TABLE rollouts ADD COLUMN request TEXT;   -- 'resume', 'cancel' or NULL
