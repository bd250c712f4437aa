-- For the logical relay (mode 'logical'): whether the relay that last held the slot stopped cleanly, with nothing
-- in flight. A relay taking a slot after a crash counts an attempt for each message its predecessor may have been
-- publishing before it sends it again (so a message that kills relays is dead-lettered); after a clean stop, or on
-- a slot no relay has streamed yet, there is nothing to count and the relay starts at full speed. Existing slots
-- start as "not clean": their relay may be running an older version that never records a clean stop. The holder
-- (the relay's tenure, set when it takes the slot) keeps a relay that lost the slot from recording for another.
ALTER TABLE "txoutbox_slots" ADD COLUMN IF NOT EXISTS clean_stop boolean NOT NULL DEFAULT false;
ALTER TABLE "txoutbox_slots" ADD COLUMN IF NOT EXISTS holder text;
