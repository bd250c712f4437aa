export { createOutbox, type Outbox } from './outbox/outbox.js';
export type { OutboxOptions } from './outbox/options.js';
export type { EnqueueResult, JsonValue, OutboxMessage } from './outbox/message.js';
export type { IdGenerator } from './outbox/ids.js';
export { migrate, type MigrateOptions } from './outbox/migrate.js';
export { createRelay, Relay, type CycleResult, type DeadMessage, type RelayEvents, type RetryingMessage } from './relay/relay.js';
export type { DeadLetterPolicy, RelayOptions } from './relay/options.js';
export type { ListenClient, ListenSource } from './relay/pg-listener.js';
export type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './brokers/broker.js';
export { MemoryBroker, type InjectedFailure } from './brokers/memory.js';
export type { DialectName } from './dialects/dialect-name.js';
export type {
  KyselyTransactionLike,
  MysqlConnectionLike,
  PgClientLike,
  TransactionLike,
} from './dialects/executor.js';
export {
  ConfigError,
  NotInTransactionError,
  SchemaError,
  TxOutboxError,
  ValidationError,
} from './errors.js';
