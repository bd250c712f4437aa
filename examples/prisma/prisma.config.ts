import { defineConfig } from 'prisma/config';

// For `prisma generate` (the schema is picked with --schema); the example connects through driver adapters.
export default defineConfig({});
