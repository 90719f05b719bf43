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
  // Drop the bytecode of functions not run during the last 2 full GCs (default 6) and baseline
  // (Sparkplug) code too (default: kept): startup and one-off code is recompiled lazily if it ever
  // runs again. ~4-6 MB of heap and ~1 MB of code space less at 1,000 peers; agent CPU to converge
  // and at rest within this host's noise (bench/README.md, "Agent memory").
  '--flush-baseline-code',
  '--bytecode-old-age=2',
]);

/**
 * Environment of the agent process, beside {@link AGENT_NODE_FLAGS}: deploy/Dockerfile sets each
 * as an ENV line (checked by a unit test) and the lab's agent spawn passes them.
 */
export const AGENT_ENV: Readonly<Record<string, string>> = Object.freeze({
  // glibc makes up to 8 x cores malloc arenas, one per thread that allocates; each keeps freed
  // memory resident. Two arenas were ~5 MB less RSS at 1,000 peers.
  MALLOC_ARENA_MAX: '2',
  // Node reads every UDP datagram and stream chunk into a fresh 64 KiB malloc block and shrinks it
  // to the bytes read; in the main heap the freed tails and large freed blocks between live small
  // ones stay resident (5 MB of the 9 MB heap free but resident at idle, malloc_info). From 64 KiB
  // up, blocks are mmap'd and returned on free; a fixed threshold also stops glibc from raising it
  // after the first large free. The top of the heap is returned past 128 KiB, with no extra pad.
  // Main heap 7.5 vs 10-14 MB at 1,000 peers; DNS CPU per query unchanged within noise.
  MALLOC_MMAP_THRESHOLD_: '65536',
  MALLOC_TRIM_THRESHOLD_: '131072',
  MALLOC_TOP_PAD_: '0',
});
