/**
 * The architecture's import rules, checked by test/architecture.test.ts (and by `npx depcruise src`).
 * Layers run one way: the sidecar (cli/) sits on top of the library and nothing in the library reaches back up;
 * brokers know only their own port; a database's differences stay behind the dialect port.
 */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'An import cycle makes load order matter and two files one concept; break it with a file both import.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'library-not-into-cli',
      comment: 'cli/ is the sidecar built on the library; the library (relay, brokers, outbox, ...) must not import it.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'brokers-stand-alone',
      comment: 'A broker adapter publishes an OutgoingMessage; it knows nothing of relays, databases or the sidecar.',
      severity: 'error',
      from: { path: '^src/brokers/' },
      to: { path: '^src/(relay|dialects|outbox|dedupe|orm|cli)/' },
    },
    {
      name: 'dialect-internals-stay-inside',
      comment: "Only the dialect port (src/dialects/*.ts) reaches into one database's folder.",
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/dialects/' },
      to: { path: '^src/dialects/(postgres|mysql)/' },
    },
  ],
  options: {
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
  },
};
