/**
 * NestJS: `TxOutboxModule.forRoot(options)` / `forRootAsync({ imports, inject, useFactory })` provides the outbox
 * (and the inbox and relay, when configured) under the tokens below, and ties a configured relay to the
 * application: it starts once the application has bootstrapped and stops, draining, when it shuts down.
 *
 * Written without parameter decorators or emitted metadata (every provider is a factory with explicit `inject`),
 * so it works whatever the application's decorator settings are.
 */
import {
  Module,
  type DynamicModule,
  type InjectionToken,
  type ModuleMetadata,
  type OnApplicationBootstrap,
  type OnModuleDestroy,
  type Provider,
} from '@nestjs/common';
import type { LogicalRelay } from '../relay/logical/logical-relay.js';
import type { RelayOptions } from '../relay/options.js';
import { createRelay, type Relay } from '../relay/relay.js';
import { createInbox, type Inbox } from '../dedupe/inbox.js';
import type { InboxOptions } from '../dedupe/options.js';
import { createOutbox } from '../outbox/outbox.js';
import type { OutboxOptions } from '../outbox/options.js';

/** The `Outbox` (from `createOutbox`): `@Inject(TXOUTBOX_OUTBOX) outbox: Outbox`. */
export const TXOUTBOX_OUTBOX = Symbol('TXOUTBOX_OUTBOX');
/** The `Inbox` (from `createInbox`), or null when the options have no `inbox`. */
export const TXOUTBOX_INBOX = Symbol('TXOUTBOX_INBOX');
/** The relay (`Relay`, or `LogicalRelay` in mode logical), or null when the options have no `relay`: add listeners to it. */
export const TXOUTBOX_RELAY = Symbol('TXOUTBOX_RELAY');
/** The module's options as given. */
export const TXOUTBOX_OPTIONS = Symbol('TXOUTBOX_OPTIONS');

export interface TxOutboxModuleOptions<DB = unknown> {
  /** `createOutbox` options (dialect, table, schema, ...). */
  outbox: OutboxOptions;
  /** `createInbox` options, to provide the consumer inbox too. */
  inbox?: InboxOptions;
  /**
   * `createRelay` options (its `db`: a Kysely instance with a pool of its own, which stays yours to destroy), to
   * run a relay in this application. Without it, run the relay elsewhere (the txoutbox sidecar, another process).
   */
  relay?: RelayOptions<DB>;
  /** How long shutting down lets the relay's batches in flight finish (`relay.stop({ drainMs })`). Default 10 s. */
  drainMs?: number;
  /** Registers the module globally, so every module can inject the outbox without importing it. */
  isGlobal?: boolean;
}

export interface TxOutboxModuleAsyncOptions<DB = unknown> extends Pick<ModuleMetadata, 'imports'> {
  /** Providers handed to `useFactory`, in order. */
  inject?: InjectionToken[];
  useFactory: (...args: never[]) => TxOutboxModuleOptions<DB> | Promise<TxOutboxModuleOptions<DB>>;
  /** Registers the module globally (decided here: the factory runs too late for it). */
  isGlobal?: boolean;
}

/** Starts the relay once the application has bootstrapped, and stops it, draining, on shutdown. */
class RelayLifecycle implements OnApplicationBootstrap, OnModuleDestroy {
  constructor(
    private readonly relay: Relay | LogicalRelay | null,
    private readonly drainMs: number,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await this.relay?.start();
  }

  /** The first shutdown hook: the relay drains before any module's shutdown hooks close the pools it may use. */
  async onModuleDestroy(): Promise<void> {
    await this.relay?.stop({ drainMs: this.drainMs });
  }
}

const LIFECYCLE = Symbol('TXOUTBOX_RELAY_LIFECYCLE');

/**
 * The txoutbox module for NestJS: `forRoot(options)` or `forRootAsync({ imports, inject, useFactory })`.
 *
 * @example
 * ```ts
 * import { Module } from '@nestjs/common';
 * import type { Outbox } from 'txoutbox';
 * import { TXOUTBOX_OUTBOX, TxOutboxModule } from 'txoutbox/nestjs';
 *
 * export class OrderService {
 *   constructor(private readonly outbox: Outbox) {} // enqueue with fromTypeorm(manager), fromPrisma(tx), ...
 * }
 *
 * export class AppModule {}
 * Module({ // as a call, or as the usual decorator with an Inject(TXOUTBOX_OUTBOX) parameter
 *   imports: [TxOutboxModule.forRoot({ outbox: { dialect: 'postgres' }, relay: { db, dialect: 'postgres', broker } })],
 *   providers: [{ provide: OrderService, useFactory: (outbox: Outbox) => new OrderService(outbox), inject: [TXOUTBOX_OUTBOX] }],
 * })(AppModule);
 * ```
 */
export class TxOutboxModule {
  static forRoot<DB>(options: TxOutboxModuleOptions<DB>): DynamicModule {
    return TxOutboxModule.build({ provide: TXOUTBOX_OPTIONS, useValue: options }, options.isGlobal, []);
  }

  static forRootAsync<DB>(options: TxOutboxModuleAsyncOptions<DB>): DynamicModule {
    const factory = options.useFactory as (...args: unknown[]) => TxOutboxModuleOptions<DB> | Promise<TxOutboxModuleOptions<DB>>;
    return TxOutboxModule.build(
      { provide: TXOUTBOX_OPTIONS, useFactory: factory, inject: options.inject ?? [] },
      options.isGlobal,
      options.imports ?? [],
    );
  }

  private static build(
    optionsProvider: Provider,
    isGlobal: boolean | undefined,
    imports: NonNullable<ModuleMetadata['imports']>,
  ): DynamicModule {
    const providers: Provider[] = [
      optionsProvider,
      { provide: TXOUTBOX_OUTBOX, useFactory: (o: TxOutboxModuleOptions) => createOutbox(o.outbox), inject: [TXOUTBOX_OPTIONS] },
      {
        provide: TXOUTBOX_INBOX,
        useFactory: (o: TxOutboxModuleOptions): Inbox | null => (o.inbox === undefined ? null : createInbox(o.inbox)),
        inject: [TXOUTBOX_OPTIONS],
      },
      {
        provide: TXOUTBOX_RELAY,
        useFactory: (o: TxOutboxModuleOptions): Relay | LogicalRelay | null =>
          o.relay === undefined ? null : createRelay(o.relay),
        inject: [TXOUTBOX_OPTIONS],
      },
      {
        provide: LIFECYCLE,
        useFactory: (relay: Relay | LogicalRelay | null, o: TxOutboxModuleOptions) =>
          new RelayLifecycle(relay, o.drainMs ?? 10_000),
        inject: [TXOUTBOX_RELAY, TXOUTBOX_OPTIONS],
      },
    ];
    return {
      module: TxOutboxModule,
      global: isGlobal ?? false,
      imports,
      providers,
      exports: [TXOUTBOX_OUTBOX, TXOUTBOX_INBOX, TXOUTBOX_RELAY, TXOUTBOX_OPTIONS],
    };
  }
}

// Applied as a call, not `@Module({})`: the same under legacy and standard decorators.
Module({})(TxOutboxModule);
