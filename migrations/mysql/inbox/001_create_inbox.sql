-- txoutbox inbox tables for MySQL 8.0+ and MariaDB 10.6+ (InnoDB), for services that consume messages.
--
-- Run as-is for the default table name `txoutbox_inbox`, or let migrateInbox(db, { dialect: 'mysql', table,
-- schema }) apply it: it renames every quoted `txoutbox_inbox...` name to the configured table (qualified with
-- the schema). Statements end with a semicolon at the end of a line.
--
-- Consumer names and ids are VARBINARY, compared byte for byte like the outbox's ids. Times are DATETIME(6) in
-- UTC, always written with UTC_TIMESTAMP(6).

-- One row per message a consumer has processed, written in the consumer's own business transaction: the row
-- exists iff the handler's effects committed. A second delivery of the id finds it and skips the handler.
CREATE TABLE IF NOT EXISTS `txoutbox_inbox` (
  -- Who processed it: two services (or two handlers) consuming the same message each process it once.
  consumer     VARBINARY(1020) NOT NULL,
  -- The message id for life (txoutbox's ULID or the producer's idempotency key), at most 255 characters.
  message_id   VARBINARY(1020) NOT NULL,
  processed_at DATETIME(6) NOT NULL,
  PRIMARY KEY (consumer, message_id),
  -- Retention: rows older than the window are deleted oldest first, in small batches.
  KEY processed_idx (processed_at)
) ENGINE = InnoDB;

-- Consumer-side dead letters: messages whose handler kept failing (or that cannot be processed at all), with the
-- last error, kept until a person replays or deletes them. The same for every broker.
CREATE TABLE IF NOT EXISTS `txoutbox_inbox_dead` (
  seq          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  consumer     VARBINARY(1020) NOT NULL,
  -- NULL when the message carried no id.
  message_id   VARBINARY(1020) NULL,
  -- The broker it came from ('rabbitmq', 'nats') and where: the queue, or the stream and its consumer.
  source       VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  destination  VARCHAR(1024) NOT NULL,
  -- The producer's topic (txoutbox-topic header) or else the routing key / subject.
  topic        VARCHAR(1024) NULL,
  payload      LONGBLOB NOT NULL,
  content_type VARCHAR(255) NULL,
  headers      JSON NOT NULL,
  last_error   TEXT NOT NULL,
  -- Deliveries that ran (or tried to run) the handler.
  attempts     INT NOT NULL,
  dead_at      DATETIME(6) NOT NULL,
  PRIMARY KEY (seq),
  -- One dead letter per message and consumer: a resend of a dead message updates its row.
  UNIQUE KEY dead_message_idx (consumer, message_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
