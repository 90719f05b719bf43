/**
 * Lab helper (not a test): runs weft's DNS service inside a network namespace, with the table given
 * as JSON on argv[2] ({ self, remotes }), listening on argv[3] ("addr:port"), resolv.conf argv[4].
 * On stdin, each line is a new JSON table source (the agent's update path). Prints "ready" once bound.
 */
import readline from 'node:readline';
import pino from 'pino';
import { DnsService, type DnsSource } from '../../src/dns/service.ts';

const [, , sourceJson, listen, resolvConfPath] = process.argv;
const i = listen.lastIndexOf(':');
const svc = await DnsService.start({
  zone: 'weft.local', ttl: 5, listen: [{ address: listen.slice(0, i), port: Number(listen.slice(i + 1)) }],
  resolvConfPath, logger: pino({ level: 'warn' }),
});
svc.update(JSON.parse(sourceJson) as DnsSource);
process.stdout.write('ready\n');
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  svc.update(JSON.parse(line) as DnsSource);
  process.stdout.write('updated\n');
});
rl.on('close', () => void svc.close().then(() => process.exit(0)));
process.on('SIGTERM', () => void svc.close().then(() => process.exit(0)));
