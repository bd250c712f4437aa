#!/usr/bin/env node
// The installed command: runs the compiled CLI (npm run build makes dist/). From a source checkout without a
// build, run `node --import tsx src/cli/main.ts` instead.
await import('../dist/cli/main.js');
