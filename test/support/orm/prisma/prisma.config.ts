import { defineConfig } from 'prisma/config';

// Only `prisma generate` reads this (the schema is chosen with --schema); the clients connect through driver adapters.
export default defineConfig({});
