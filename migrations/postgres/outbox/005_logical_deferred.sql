-- For the logical relay (mode 'logical'): a row the relay handed back to the table. A streamed message that cannot
-- go out yet (delayed, retrying, or behind such a message of its key) is not held in memory, where it would hold
-- the slot's confirmed position and so the server's WAL: the relay writes down its commit position (deferred_lsn,
-- the end of the transaction that committed it) and its due time, confirms the slot past it, and publishes it from
-- the table when due, each key's deferred rows in commit order (deferred_lsn, then seq). NULL for every other row;
-- the polling relay never sets it.
ALTER TABLE "txoutbox" ADD COLUMN IF NOT EXISTS deferred_lsn bigint;

-- Deferred rows coming due, oldest first.
CREATE INDEX IF NOT EXISTS txoutbox_deferred_idx ON "txoutbox" (next_attempt_at, seq)
  WHERE state = 'pending' AND deferred_lsn IS NOT NULL;

-- A key's deferred rows in commit order: only its first may go out.
CREATE INDEX IF NOT EXISTS txoutbox_deferred_key_idx ON "txoutbox" (msg_key, deferred_lsn, seq)
  WHERE state = 'pending' AND deferred_lsn IS NOT NULL;
