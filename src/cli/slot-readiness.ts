import type { Kysely } from 'kysely';
import type { LogicalRelay } from '../relay/logical/logical-relay.js';
import { slotStatus } from '../relay/logical/slots.js';
import type { ReadinessCheck } from './http-server.js';
import { within } from './within.js';

/**
 * /readyz for a table in mode logical: ready while this sidecar's relay streams at least one of the table's slots
 * and the server still has that slot. A standby (another relay holds every slot) is alive but not ready: it
 * publishes nothing until it takes a slot over.
 */
export function slotReadiness(name: string, relay: LogicalRelay, db: Kysely<unknown>, timeoutMs: number): ReadinessCheck {
  return {
    kind: 'slot',
    name,
    async check() {
      const partitions = relay.status().partitions;
      const owned = partitions.filter((partition) => partition.owned).map((partition) => partition.slot);
      if (owned.length === 0) {
        const slots = relay.names.slots.join(', ');
        throw new Error(
          `this relay streams none of its slots (${slots}): another relay holds them (this one stands by), or it cannot stream (see its error log)`,
        );
      }
      for (const slot of owned) if ((await within(slotStatus(db, slot), timeoutMs)).exists) return;
      throw new Error(`the slot(s) ${owned.join(', ')} no longer exist on the server`);
    },
  };
}
