-- For the logical relay (mode 'logical'): per replication slot, the highest seq the table held when the slot was
-- created. Rows up to it committed before the slot could stream them; a relay taking the slot publishes those
-- still pending from the table (the backfill), and everything after comes from the stream.
CREATE TABLE IF NOT EXISTS "txoutbox_slots" (
  slot             text PRIMARY KEY,
  backfill_through bigint NOT NULL
);
