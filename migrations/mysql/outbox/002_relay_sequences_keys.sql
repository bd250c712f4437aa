-- Per-key order without producer locks (txoutbox 0.2).
--
-- Producers now only insert: a keyed message arrives with ready NULL ("not yet sequenced") and the relay, in
-- transactions of its own, makes it its key's head (ready 1) or puts it behind the head (ready 0). Keyless
-- messages arrive ready. Nothing a producer does waits for the relay, and the relay never waits for a producer.
-- `txoutbox_keys` (the per-key count the producer kept) goes away; `txoutbox_key_locks` stays, now locked by
-- relays only, so that two relays never sequence the same key at once.

ALTER TABLE `txoutbox`
  MODIFY ready BOOLEAN NULL,
  DROP KEY key_idx,
  -- The head of a key (pending or dead), and the messages waiting behind it, the next one first.
  ADD KEY key_idx (msg_key, state, ready, seq),
  -- Arrivals the relay has not sequenced yet, oldest first.
  ADD KEY arrival_idx (ready, seq);

DROP TABLE IF EXISTS `txoutbox_keys`;

-- The sequencer's turn: one relay at a time sequences arrivals (the others go on claiming), taking this row with
-- SKIP LOCKED. Key stripes are 0 to 4095.
INSERT IGNORE INTO `txoutbox_key_locks` (stripe) VALUES (65535);
