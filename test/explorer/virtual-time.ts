/**
 * The explorer's own time: performance.now(), which the relay's circuit breaker and scan cursors read, moves only
 * when the explorer says, so a replayed schedule probes and rescans at the same moves, and "a second later" costs
 * no second. Database time is untouched (leases are far longer than any schedule; the explorer expires them).
 */
let offset = 0;
let installed = false;

export function installVirtualTime(): void {
  if (installed) return;
  installed = true;
  const base = performance.now();
  performance.now = () => base + offset;
}

export function advance(ms: number): void {
  offset += ms;
}
