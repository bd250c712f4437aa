export { createOutbox, type Outbox } from './outbox/outbox.js';
export type { OutboxOptions } from './outbox/options.js';
export type { EnqueueResult, JsonValue, OutboxMessage } from './outbox/message.js';
export type { IdGenerator } from './outbox/ids.js';
export { migrate, type MigrateOptions } from './outbox/migrate.js';
export type { MigrationResult } from './dialects/migrator.js';
export { createRelay, Relay, type CycleResult, type DeadMessage, type RelayEvents, type RetryingMessage } from './relay/relay.js';
export type { DeadLetterPolicy, RelayMode, RelayOptions } from './relay/options.js';
export { LogicalRelay, type LogicalRelayStatus } from './relay/logical/logical-relay.js';
export { LogicalDecodingUnavailableError, slotStatus, type SlotStatus } from './relay/logical/slots.js';
export { LogicalPartitionsMismatchError } from './relay/logical/partitions-check.js';
export { ReplicationLinkSilentError } from './relay/logical/receive-deadline.js';
export type { ListenClient, ListenSource } from './relay/pg-listener.js';
export { decorate, type BrokerDecorator } from './brokers/decorator.js';
export { traceBroker } from './brokers/tracing.js';
export { timePublishes, type PublishObserver } from './brokers/timing.js';
export { RoutingBroker, routeTopics, type BrokerTable, type RouteTarget, type RoutingBrokerOptions } from './brokers/routing.js';
export type { MessageRouter, Route } from './brokers/route.js';
export type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './brokers/broker.js';
export { MemoryBroker, type InjectedFailure } from './brokers/memory.js';
export type { DialectName } from './dialects/dialect-name.js';
export type {
  KyselyTransactionLike,
  MysqlConnectionLike,
  OrmTransaction,
  PgClientLike,
  SqlResult,
  TransactionLike,
} from './dialects/executor.js';
export { ConfigError, NotInTransactionError, SchemaError, TxOutboxError, ValidationError } from './errors.js';
export { createInbox, type CleanupOptions, type DeadLetterQuery, type Inbox } from './dedupe/inbox.js';
export type { InboxOptions } from './dedupe/options.js';
export type { InboxDelivery } from './dedupe/delivery.js';
export type { InboxDeadLetter, InboxMessage, NewDeadLetter, ProcessResult } from './dedupe/message.js';
export { migrateInbox, type MigrateInboxOptions } from './dedupe/migrate.js';
export type { InboxConsumerEvents, InboxConsumerOptions, InboxHandler } from './dedupe/consumers/core.js';
