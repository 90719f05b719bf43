/**
 * The prerequisite check every lab test runs while vitest collects it: root, the tools it needs on
 * PATH and a WireGuard implementation (the kernel module or wireguard-go). Synchronous, because
 * `describe.skipIf` is decided at collection time; `checkRequirements` in src/lab/host.ts is the
 * async, runner-based check the lab itself uses.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { uniquePrefix } from '../../src/lab/host.ts';

/** True when `tool` is found on PATH (`command -v`). */
export function hasTool(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** What a lab test lacks on this host. */
export interface Prerequisites {
  /** True when anything is missing: the test must skip. */
  readonly skip: boolean;
  /** What is missing, in order: `root`, then tools, then wireguard-go, then /dev/net/tun. */
  readonly missing: readonly string[];
  /** ` (skipped: missing ...)` to append to a describe/it title, or '' when nothing is missing. */
  readonly why: string;
}

/** Options for {@link labPrerequisites}. */
export interface PrerequisiteOptions {
  /** Tools that must be on PATH. */
  readonly tools: readonly string[];
  /** Also require WireGuard: the kernel module, or wireguard-go on PATH. */
  readonly wireguard?: boolean;
  /** Also require /dev/net/tun (tests that always run wireguard-go, even where the kernel module exists). */
  readonly tun?: boolean;
  /** Lab prefix base: the result carries `uniquePrefix(prefix)`, or `${prefix}x` when skipping (never created). */
  readonly prefix?: string;
}

/** Checks root, `tools` and (if asked) WireGuard; with `prefix`, also picks the run's lab prefix. */
export function labPrerequisites(opts: PrerequisiteOptions & { readonly prefix: string }): Prerequisites & { readonly prefix: string };
export function labPrerequisites(opts: PrerequisiteOptions): Prerequisites;
export function labPrerequisites(opts: PrerequisiteOptions): Prerequisites & { readonly prefix?: string } {
  const missing = [
    ...(process.getuid?.() === 0 ? [] : ['root']),
    ...opts.tools.filter((t) => !hasTool(t)),
    ...(!opts.wireguard || existsSync('/sys/module/wireguard') || hasTool('wireguard-go') ? [] : ['wireguard-go (no WireGuard kernel module)']),
    ...(!opts.tun || existsSync('/dev/net/tun') ? [] : ['/dev/net/tun']),
  ];
  const skip = missing.length > 0;
  const why = skip ? ` (skipped: missing ${missing.join(', ')})` : '';
  if (opts.prefix === undefined) return { skip, missing, why };
  // A prefix of its own per run, so concurrent runs on one host never touch each other's labs.
  return { skip, missing, why, prefix: skip ? `${opts.prefix}x` : uniquePrefix(opts.prefix) };
}
