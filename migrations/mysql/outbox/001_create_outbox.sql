-- txoutbox outbox tables for MySQL 8.0+ and MariaDB 10.6+ (InnoDB).
--
-- Run as-is for the default table name `txoutbox`, or let migrate(db, { dialect: 'mysql', table, schema })
-- apply it: it renames every quoted `txoutbox...` name to the configured table (qualified with the schema).
-- Statements end with a semicolon at the end of a line.
--
-- Ids and keys are VARBINARY: compared byte for byte, so 'A' and 'a' (or 'a' and 'a ') are different ids, as
-- they are everywhere else. Times are DATETIME(6) in UTC, always written with UTC_TIMESTAMP(6).

-- One row per message until it is sent (and, with a retention window, a while after).
CREATE TABLE IF NOT EXISTS `txoutbox` (
  -- Enqueue order. Taken while the message's key is locked, so within a key it is also commit order.
  seq             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  -- The message id for life: a ULID or the caller's idempotency key (UTF-8, at most 255 characters).
  id              VARBINARY(1020) NOT NULL,
  topic           VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- Ordering key; NULL means no order promise.
  msg_key         VARBINARY(1020) NULL,
  -- Exactly the bytes the broker receives (UTF-8 JSON unless content_type says otherwise).
  payload         LONGBLOB NOT NULL,
  content_type    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  headers         JSON NOT NULL,
  state           VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'pending',
  -- 1 for the head of its key (no earlier unsent message of the key) and for every keyless message:
  -- only ready rows may be claimed, so finding work never scans a key's backlog.
  ready           BOOLEAN NOT NULL,
  attempts        INT NOT NULL DEFAULT 0,
  -- Not before: the requested delivery time at first, then the backoff after each failed attempt.
  next_attempt_at DATETIME(6) NOT NULL,
  -- The relay instance working on the row, and until when; an expired lease can be taken over.
  lease_owner     VARCHAR(255) NULL,
  lease_until     DATETIME(6) NULL,
  last_error      TEXT NULL,
  created_at      DATETIME(6) NOT NULL,
  sent_at         DATETIME(6) NULL,
  PRIMARY KEY (seq),
  UNIQUE KEY id_unique (id),
  -- The relay's claim: due heads, oldest first. A claim moves next_attempt_at to the lease's end, so rows in
  -- flight or in backoff sit outside the range a claim reads.
  KEY claim_idx (state, ready, next_attempt_at, seq),
  -- The next pending message of a key, found when its head is sent.
  KEY key_idx (msg_key, state, seq),
  -- Sent rows kept for a retention window, deleted oldest first.
  KEY sent_idx (state, sent_at),
  CONSTRAINT state_valid CHECK (state IN ('pending', 'sent', 'dead'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per ordering key, counting the key's unsent messages (read to mark the head of each key).
CREATE TABLE IF NOT EXISTS `txoutbox_keys` (
  msg_key VARBINARY(1020) NOT NULL,
  pending BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (msg_key)
) ENGINE = InnoDB;

-- A fixed set of lock rows: enqueue locks the stripe of each of its keys (a hash of the key) until commit.
-- They exist before anyone needs them, so locking one never takes InnoDB gap locks, and producers of one key
-- never insert its key row concurrently (the pattern InnoDB answers with a deadlock).
CREATE TABLE IF NOT EXISTS `txoutbox_key_locks` (
  stripe SMALLINT UNSIGNED NOT NULL,
  PRIMARY KEY (stripe)
) ENGINE = InnoDB;

INSERT IGNORE INTO `txoutbox_key_locks` (stripe)
SELECT a.n * 256 + b.n * 16 + c.n
FROM (SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5
      UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9 UNION ALL SELECT 10
      UNION ALL SELECT 11 UNION ALL SELECT 12 UNION ALL SELECT 13 UNION ALL SELECT 14 UNION ALL SELECT 15) AS a
CROSS JOIN (SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5
      UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9 UNION ALL SELECT 10
      UNION ALL SELECT 11 UNION ALL SELECT 12 UNION ALL SELECT 13 UNION ALL SELECT 14 UNION ALL SELECT 15) AS b
CROSS JOIN (SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5
      UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9 UNION ALL SELECT 10
      UNION ALL SELECT 11 UNION ALL SELECT 12 UNION ALL SELECT 13 UNION ALL SELECT 14 UNION ALL SELECT 15) AS c;
