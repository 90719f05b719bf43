/**
 * `weft lab demo` (what `npm run lab` runs): 3 nodes x 2 pods, ping, curl and a TCP transfer across
 * nodes, an underlay capture during that traffic showing only WireGuard UDP, then `weft status` of
 * a node; tears the lab down unless `keep`.
 */
import { join } from 'node:path';
import { Lab, renderLab, waitFor } from './lab.ts';
import type { CaptureSummary } from './pcap.ts';
import { checkRequirements } from './host.ts';

/** Options of {@link runDemo}. */
export interface DemoOptions {
  readonly prefix: string;
  readonly backend: 'auto' | 'kernel' | 'userspace';
  readonly keep: boolean;
  readonly out: (s: string) => void;
  readonly progress: (s: string) => void;
}

/** Formats the capture verdict in a few lines. */
export function renderCapture(s: CaptureSummary): string {
  const lines = [
    `underlay capture: ${s.total} frames`,
    `  WireGuard UDP:      ${s.wireguard} (${s.wireguardData} encrypted data messages)`,
    `  mesh gossip:        ${s.gossip} (control plane, sealed with the mesh key)`,
    `  ARP:                ${s.arp}`,
    `  ICMP errors about WireGuard/control traffic: ${s.icmpErrors}`,
    `  anything else:      ${s.other}${s.otherSamples.length ? ` e.g. ${s.otherSamples.slice(0, 3).join('; ')}` : ''}`,
    `  pod address in an IP header: ${s.podAddress}${s.podAddressSamples.length ? ` e.g. ${s.podAddressSamples.slice(0, 3).join('; ')}` : ''}`,
  ];
  return `${lines.join('\n')}\n`;
}

/** Runs the demo; resolves true when every check passed. Always tears down unless `keep`. */
export async function runDemo(o: DemoOptions): Promise<boolean> {
  const lab = new Lab({ prefix: o.prefix, progress: o.progress, warn: o.progress });
  let ok = true;
  const check = (cond: boolean, what: string): void => {
    o.out(`${cond ? 'ok  ' : 'FAIL'} ${what}\n`);
    if (!cond) ok = false;
  };
  await checkRequirements(lab.host.runner, o.backend, ['ping', 'curl', 'iperf3', 'tcpdump']);
  try {
    const meta = await lab.up({ nodes: 3, podsPerNode: 2, backend: o.backend });
    o.out(`\n${renderLab(meta.nodes, meta.pods)}\n`);
    const pod = (n: number, p: number) => meta.pods.find((x) => x.netns === `${o.prefix}-n${n}-p${p}`)!;
    const a = pod(1, 1);
    const b = pod(2, 1);
    const c = pod(3, 2);

    const capture = await lab.captureUnderlay('demo-capture');
    for (const dst of [b, c]) {
      const r = await lab.exec(a.netns, ['ping', '-c', '3', '-i', '0.2', '-W', '2', dst.ip], { check: false });
      const line = r.stdout.split('\n').find((l) => l.includes('packets transmitted')) ?? r.stderr.trim();
      check(r.code === 0, `ping ${a.netns} (${a.ip}) -> ${dst.netns} (${dst.ip}): ${line.trim()}`);
    }

    const web = b;
    await lab.spawnIn(web.netns, lab.probeArgv('http', '8080', `hello from pod ${web.netns} (${web.ip})`), 'demo-http');
    const curl = await waitFor('the HTTP server', 10_000, async () => {
      const r = await lab.exec(a.netns, ['curl', '-sS', '--max-time', '3', `http://${web.ip}:8080/`], { check: false });
      return r.code === 0 ? r : undefined;
    }, 200).catch((err: Error) => ({ code: 1, stdout: '', stderr: err.message }));
    check(curl.code === 0, `curl ${a.netns} -> http://${web.ip}:8080/: ${(curl.stdout || curl.stderr).trim()}`);
    await lab.host.stopProcesses('demo-http');

    const server = c;
    await lab.spawnIn(server.netns, ['iperf3', '-s', '-1', '-p', '5201'], 'demo-iperf');
    await new Promise((r) => setTimeout(r, 500));
    const iperf = await lab.exec(a.netns, ['iperf3', '-c', server.ip, '-p', '5201', '-t', '2', '-J'], { check: false, timeoutMs: 30_000 });
    let transferred = 'no result';
    try {
      const j = JSON.parse(iperf.stdout) as { end?: { sum_received?: { bytes?: number; bits_per_second?: number } }; error?: string };
      const recv = j.end?.sum_received;
      if (j.error) transferred = j.error;
      else if (recv?.bytes) transferred = `${(recv.bytes / 1048576).toFixed(1)} MiB at ${((recv.bits_per_second ?? 0) / 1e6).toFixed(0)} Mbit/s`;
      check(!j.error && (recv?.bytes ?? 0) > 0, `TCP transfer (iperf3, 2 s) ${a.netns} -> ${server.netns}: ${transferred}`);
    } catch {
      check(false, `TCP transfer (iperf3) ${a.netns} -> ${server.netns}: ${iperf.stderr.trim() || iperf.stdout.trim().slice(0, 200)}`);
    }
    await lab.host.stopProcesses('demo-iperf');

    const summary = await capture.stop();
    o.out(`\n${renderCapture(summary)}`);
    check(summary.wireguardData > 0 && summary.other === 0 && summary.podAddress === 0, 'the underlay carried pod traffic only as WireGuard UDP');

    const status = await lab.exec(meta.nodes[0]!.name, [lab.nodeBin, join(lab.repoDir, 'src', 'main.ts'), 'status'], { check: false });
    o.out(`\n$ weft lab exec ${meta.nodes[0]!.name} -- weft status\n${status.stdout}${status.stderr}`);
    check(status.code === 0, '`weft status` answered');
    return ok;
  } finally {
    if (o.keep && lab.host.exists()) {
      o.out(`\nlab ${o.prefix} kept: try \`weft lab status --prefix ${o.prefix}\`, \`weft lab exec ${o.prefix}-n1-p1 -- ping <ip>\`, then \`weft lab down --prefix ${o.prefix}\`\n`);
    } else {
      await lab.down();
      o.progress(`lab ${o.prefix}: removed`);
    }
  }
}
