import { openDrizzleFixture } from '../test/support/orm/drizzle.js';
import { openKnexFixture } from '../test/support/orm/knex.js';
import { openMikroOrmFixture } from '../test/support/orm/mikro-orm.js';
import { openPrismaFixture } from '../test/support/orm/prisma.js';
import { openSequelizeFixture } from '../test/support/orm/sequelize.js';
import { openTypeormFixture } from '../test/support/orm/typeorm.js';
import type { EnqueueSubject, OrmSubject } from './orm-enqueue.js';

/** The fixtures' transactions hand out OrmTransactions; the bench passes them back as they came. */
const subject = (name: string, open: (...args: Parameters<OrmSubject['open']>) => Promise<unknown>): OrmSubject => ({
  name,
  open: async (...args) => (await open(...args)) as EnqueueSubject,
});

/** The ORMs the enqueue bench drives, each opened by the fixture its contract tests use (test/support/orm/). */
export const ORM_SUBJECTS: readonly OrmSubject[] = [
  subject('Prisma', openPrismaFixture),
  subject('Drizzle', (dialect, url, schema) => openDrizzleFixture(dialect, url, schema)),
  subject('Knex', openKnexFixture),
  subject('MikroORM', openMikroOrmFixture),
  subject('TypeORM', openTypeormFixture),
  subject('Sequelize', (dialect, url, schema) => openSequelizeFixture(dialect, url, schema)),
];
