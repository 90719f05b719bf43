/**
 * `weft lab up|down|status|exec|demo`: the command-line face of the lab ({@link Lab}). Wiring and
 * output only; progress goes to stderr, results (tables or `--json`) to stdout.
 */
import { spawn } from 'node:child_process';
import { Command, InvalidArgumentError } from 'commander';
import { Lab, LabError, renderLab } from './lab.ts';
import { LabRequirementError, LabStateError, validatePrefix } from './host.ts';
import { runDemo } from './demo.ts';

const DEFAULT_PREFIX = 'weft';

function intArg(min: number, max: number) {
  return (v: string): number => {
    if (!/^\d{1,4}$/.test(v) || Number(v) < min || Number(v) > max) throw new InvalidArgumentError(`must be an integer between ${min} and ${max}`);
    return Number(v);
  };
}

function prefixArg(v: string): string {
  try {
    return validatePrefix(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function backendArg(v: string): 'auto' | 'kernel' | 'userspace' {
  if (v !== 'auto' && v !== 'kernel' && v !== 'userspace') throw new InvalidArgumentError('must be auto, kernel or userspace');
  return v;
}

const progress = (msg: string): void => {
  process.stderr.write(`${msg}\n`);
};

/** Prints a lab error as one clear message and sets a non-zero exit code (no stack trace for expected errors). */
function fail(err: unknown): void {
  const expected = err instanceof LabError || err instanceof LabStateError || err instanceof LabRequirementError;
  process.stderr.write(`weft lab: ${expected ? (err as Error).message : err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
}

/** Registers `weft lab` and its sub-commands on `program`. */
export function registerLabCommands(program: Command): void {
  const lab = program.command('lab').description('a local multi-node weft mesh in network namespaces (needs root)');

  lab
    .command('up')
    .description('build N nodes running real agents and M pods per node wired by the real CNI plugin')
    .option('--nodes <n>', 'number of nodes', intArg(1, 50), 3)
    .option('--pods-per-node <m>', 'pods per node', intArg(0, 50), 2)
    .option('--backend <auto|kernel|userspace>', 'WireGuard implementation of the agents', backendArg, 'auto')
    .option('--prefix <p>', 'name prefix of every namespace (several labs can run side by side)', prefixArg, DEFAULT_PREFIX)
    .option('--clouds <n>', '2: add a second cloud behind a masquerading NAT whose nodes join by token (issue 7)', intArg(1, 2), 1)
    .option('--cloud2-nodes <n>', 'nodes in cloud 2 with --clouds 2', intArg(1, 50), 1)
    .option('--claim-blocks', 'let the agents claim pod blocks through the mesh instead of fixed 10.244.<i>.0/24')
    .option('--json', 'print the result as JSON')
    .action(async (o: { nodes: number; podsPerNode: number; backend: 'auto' | 'kernel' | 'userspace'; prefix: string; claimBlocks?: boolean; clouds: number; cloud2Nodes: number; json?: boolean }) => {
      try {
        const l = new Lab({ prefix: o.prefix, progress, warn: progress });
        const meta = await l.up({ nodes: o.nodes, podsPerNode: o.podsPerNode, backend: o.backend, fixedPodCIDRs: !o.claimBlocks, clouds: o.clouds === 2 ? 2 : 1, cloud2Nodes: o.cloud2Nodes });
        if (o.json) process.stdout.write(`${JSON.stringify({ prefix: o.prefix, subnet: meta.subnet, nodes: meta.nodes.map(nodeJson), pods: meta.pods }, null, 2)}\n`);
        else process.stdout.write(renderLab(meta.nodes, meta.pods));
      } catch (err) {
        fail(err);
      }
    });

  lab
    .command('down')
    .description('remove every namespace, link, mount and process the lab created')
    .option('--prefix <p>', 'lab prefix', prefixArg, DEFAULT_PREFIX)
    .action(async (o: { prefix: string }) => {
      try {
        const n = await new Lab({ prefix: o.prefix, progress, warn: progress }).down();
        progress(n > 0 ? `lab ${o.prefix}: removed (${n} objects recorded)` : `lab ${o.prefix}: nothing to remove`);
      } catch (err) {
        fail(err);
      }
    });

  lab
    .command('status')
    .description('nodes, pods and agent health of a running lab')
    .option('--prefix <p>', 'lab prefix', prefixArg, DEFAULT_PREFIX)
    .option('--json', 'print as JSON')
    .action(async (o: { prefix: string; json?: boolean }) => {
      try {
        const l = await new Lab({ prefix: o.prefix }).open();
        const s = await l.status();
        if (o.json) process.stdout.write(`${JSON.stringify({ ...s, nodes: s.nodes.map(nodeJson) }, null, 2)}\n`);
        else process.stdout.write(`lab ${s.prefix} (underlay ${s.subnet})\n${renderLab(s.nodes, s.pods)}`);
      } catch (err) {
        fail(err);
      }
    });

  lab
    .command('exec')
    .description('run a command inside a node (network + mount namespace) or a pod (network namespace)')
    .argument('<node-or-pod>', 'e.g. weft-n1 or weft-n1-p2')
    .argument('<cmd...>', 'the command, after --')
    .option('--prefix <p>', 'lab prefix (default: the part of the name before the first "-")', prefixArg)
    .action(async (name: string, cmd: string[], o: { prefix?: string }) => {
      try {
        const prefix = o.prefix ?? name.split('-')[0]!;
        const l = await new Lab({ prefix }).open();
        const argv = l.host.wrap(l.target(name), cmd);
        // Interactive: inherit the terminal and pass the exit code through.
        const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit' });
        process.exitCode = await new Promise<number>((resolve) => {
          child.on('error', (err) => {
            process.stderr.write(`weft lab exec: ${err.message}\n`);
            resolve(127);
          });
          child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
        });
      } catch (err) {
        fail(err);
      }
    });

  lab
    .command('demo')
    .description('3 nodes x 2 pods: ping and TCP across nodes, an underlay capture showing only WireGuard UDP, `weft status` of a node')
    .option('--prefix <p>', 'lab prefix', prefixArg, DEFAULT_PREFIX)
    .option('--backend <auto|kernel|userspace>', 'WireGuard implementation', backendArg, 'auto')
    .option('--keep', 'leave the lab running afterwards (remove it with `weft lab down`)')
    .action(async (o: { prefix: string; backend: 'auto' | 'kernel' | 'userspace'; keep?: boolean }) => {
      try {
        const ok = await runDemo({ prefix: o.prefix, backend: o.backend, keep: o.keep === true, out: (s) => process.stdout.write(s), progress });
        if (!ok) process.exitCode = 1;
      } catch (err) {
        fail(err);
      }
    });
}

function nodeJson(n: { name: string; netns: string; underlayIP: string; podCIDR: string; meshIP: string; cloud?: 1 | 2; agentPid?: number; ready?: boolean; peers?: number; handshakes?: number; error?: string }) {
  const { name, netns, underlayIP, podCIDR, meshIP, agentPid, ready, peers, handshakes, error } = n;
  return { name, netns, underlayIP, podCIDR, meshIP, cloud: n.cloud ?? 1, agentPid, ready, peers, handshakes, error };
}

// Standalone entry (`node src/lab/cli.ts lab up ...`), the same commands as `weft lab ...`.
if (import.meta.main) {
  const program = new Command().name('weft').showHelpAfterError();
  registerLabCommands(program);
  program.parseAsync(process.argv).catch((err: unknown) => fail(err));
}
