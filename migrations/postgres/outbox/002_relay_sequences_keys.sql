-- Per-key order without producer locks (txoutbox 0.2).
--
-- Producers now only insert: a keyed message arrives with ready NULL ("not yet sequenced") and the relay, in
-- transactions of its own, makes it its key's head (ready true) or puts it behind the head (ready false). Keyless
-- messages arrive ready. Nothing a producer does waits for the relay, and the relay never waits for a producer.
-- <table>_keys (the per-key lock and count the producer kept) goes away.

ALTER TABLE "txoutbox" ALTER COLUMN ready DROP NOT NULL;

-- Arrivals the relay has not sequenced yet, oldest first.
CREATE INDEX IF NOT EXISTS txoutbox_arrival_idx ON "txoutbox" (seq) WHERE ready IS NULL;

-- The head of each key (pending, or dead and holding its key): at most one live row per key.
CREATE INDEX IF NOT EXISTS txoutbox_head_idx ON "txoutbox" (msg_key, seq) WHERE ready AND msg_key IS NOT NULL;

-- The messages of a key that are not its head (waiting behind it, or not sequenced yet), the first one first.
CREATE INDEX IF NOT EXISTS txoutbox_waiting_idx ON "txoutbox" (msg_key, seq) WHERE state = 'pending' AND ready IS NOT TRUE;

DROP INDEX IF EXISTS "txoutbox_key_idx";

DROP TABLE IF EXISTS "txoutbox_keys";
