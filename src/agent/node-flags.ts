/**
 * The Node.js/V8 flags (and environment) the agent process runs with, in ONE place: deploy/Dockerfile's ENTRYPOINT
 * (a unit test keeps it equal to this list), the lab's agent spawn (src/lab/lab.ts) and so the
 * bench suite's agent RSS measurement. Command-line flags: `--optimize-for-size` is refused in
 * NODE_OPTIONS. Figures with and without each: bench/README.md ("Agent memory").
 */
export const AGENT_NODE_FLAGS: readonly string[] = Object.freeze([
  // The agent allocates in bursts (a plan per mesh change); with the default young generation
  // (up to 2 x 32 MB semi-spaces) V8 keeps those pages resident after the garbage is gone.
  '--max-semi-space-size=1',
  // Slower heap growth and eager memory reduction; the plan/reconcile CPU time at 1,000 peers did
  // not measurably change (bench/reconcile.ts).
  '--optimize-for-size',
  // One V8 platform worker instead of one per core: fewer threads, stacks and malloc arenas; the
  // agent's heap is small enough for a single GC helper.
  '--v8-pool-size=1',
  // Maglev is the top JIT tier: TurboFan's compiler and code are never touched (~6 MB less of the
  // node binary resident, ~8-10 MB RSS in all at 1,000 peers). Agent CPU to converge and at rest
  // stayed within this host's noise; a full re-plan of 1,000 peers costs up to ~1.5x (see README).
  '--max-opt=2',
]);

/**
 * Environment of the agent process, beside {@link AGENT_NODE_FLAGS}: deploy/Dockerfile sets each
 * as an ENV line (checked by a unit test) and the lab's agent spawn passes them.
 */
export const AGENT_ENV: Readonly<Record<string, string>> = Object.freeze({
  // glibc makes up to 8 x cores malloc arenas, one per thread that allocates; each keeps freed
  // memory resident. Two arenas were ~5 MB less RSS at 1,000 peers.
  MALLOC_ARENA_MAX: '2',
});
