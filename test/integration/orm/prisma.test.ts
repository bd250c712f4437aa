import { inject } from 'vitest';
import { ormContract } from '../../support/orm-contract.js';
import { openPrismaFixture } from '../../support/orm/prisma.js';

ormContract('prisma', 'postgres', (h) => openPrismaFixture('postgres', inject('pgUrl'), h.schema));
ormContract('prisma', 'mysql', (h) => openPrismaFixture('mysql', inject('mysqlUrl'), h.schema));
