/**
 * Agent configuration: command-line flags and `WEFT_*` environment variables turned into one
 * frozen, validated {@link Config}. Pure: the caller passes the raw flag values and the
 * environment; nothing here reads the process, the disk or the clock.
 */
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import IPCIDR from 'ip-cidr';

/** Log levels pino understands (the agent's `--log-level`). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** WireGuard backends selectable with `--backend`. */
export const BACKENDS = ['auto', 'kernel', 'userspace'] as const;

/** A "host:port" pair, already validated. `host` is an IP literal or a DNS name. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** The validated agent configuration. Every field is frozen; durations are in milliseconds. */
export interface Config {
  readonly name: string;
  readonly seeds: readonly HostPort[];
  /** Underlay address the mesh binds to and advertises; undefined = pick the host's first non-internal address. */
  readonly listenAddr: string | undefined;
  readonly meshPort: number;
  readonly wgPort: number;
  readonly ifname: string;
  /** Canonical CIDRs (host bits zero), at most one per family. */
  readonly clusterCIDRs: readonly string[];
  readonly blockSize: number;
  /** A fixed pod block (canonical CIDRs, inside a cluster CIDR, of `blockSize` for IPv4); empty = claim through the mesh. */
  readonly podCIDRs: readonly string[];
  readonly backend: (typeof BACKENDS)[number];
  /** 'auto' = underlay MTU minus WireGuard overhead. */
  readonly mtu: number | 'auto';
  readonly stateDir: string;
  readonly runDir: string;
  /** `<runDir>/weft.sock`. */
  readonly socketPath: string;
  readonly meshKeyFile: string | undefined;
  readonly resyncMs: number;
  readonly dnsZone: string;
  readonly dnsListen: readonly HostPort[];
  readonly dnsTtl: number;
  readonly logLevel: (typeof LOG_LEVELS)[number];
  readonly kubeconfig: string | undefined;
  /** Optional TCP address for /metrics, /healthz and /readyz. */
  readonly metricsAddr: HostPort | undefined;
  /**
   * Announce a graceful mesh leave on SIGTERM (peers drop this node at once). Off by default: a
   * restarting agent (rolling update) should not make every peer drop it; a node that really goes
   * away is removed after failure detection anyway.
   */
  readonly leaveOnExit: boolean;
  /** TCP port of the join listener (`weft join`, issue 7) on the mesh's listen address; 0 = off. */
  readonly joinPort: number;
  /** Mesh timing: memberlist's LAN defaults, or its WAN profile for meshes spanning clouds (issue 7). */
  readonly meshProfile: 'lan' | 'wan';
  /** WireGuard key rotation period in ms (`--key-rotation 24h`); 0 = off (the default). */
  readonly keyRotationMs: number;
  /**
   * Relaying for peers that cannot reach each other (issue 7, `src/relay/README.md`): offer to relay
   * (`on`), never (`off`), or only while this node is not behind NAT (`auto`, the default).
   */
  readonly relay: 'auto' | 'on' | 'off';
  /** UDP port range [lo, hi] this node relays on (two ports per relayed pair). */
  readonly relayPorts: readonly [number, number];
  /** How long (ms) a direct link must fail before a relay is asked for it. */
  readonly relayAfterMs: number;
  /** How long (ms) a pair stays relayed before the direct link is retried (when the mesh reaches the peer directly); doubled per failed retry. */
  readonly relayRetryMs: number;
  /** Period (ms) of the link prober (probes peers without a recent handshake). */
  readonly probeIntervalMs: number;
  /** In-cluster: name of the Secret mirroring join tokens (`src/k8s/token-secret.ts`); undefined = no mirror (`off`). */
  readonly tokenSecret: string | undefined;
}

/** A bad configuration value. The message is one line naming the flag, its env var and the value. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  /** The flag at fault, e.g. `--mesh-port`. */
  readonly flag: string;
  constructor(flag: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.flag = flag;
  }
}

/** One configuration option: its flag, env var, default and help text, used by the CLI too. */
export interface OptionSpec {
  /** camelCase key, as commander names it. */
  readonly key: string;
  readonly flag: string;
  readonly env: string;
  readonly arg: string;
  readonly help: string;
  readonly default?: string;
}

const opt = (key: string, arg: string, help: string, def?: string): OptionSpec => {
  const kebab = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  return { key, flag: `--${kebab}`, env: `WEFT_${kebab.replace(/-/g, '_').toUpperCase()}`, arg, help, default: def };
};

/** Default `--relay-ports`: the UDP range a relay takes its per-pair ports from. */
export const DEFAULT_RELAY_PORTS = '51900-51999';

/** Every agent option, in help order. Flags win over `WEFT_*` env vars, which win over defaults. */
export const AGENT_OPTIONS: readonly OptionSpec[] = [
  opt('name', '<name>', 'node name in the mesh (default: hostname)'),
  opt('seeds', '<host:port,...>', 'mesh seed addresses', ''),
  opt('listenAddr', '<ip>', 'underlay address the mesh binds to and advertises (default: first non-internal address)'),
  opt('meshPort', '<port>', 'gossip port (UDP and TCP)', '7946'),
  opt('wgPort', '<port>', 'WireGuard listen port', '51820'),
  opt('ifname', '<name>', 'WireGuard interface name', 'weft0'),
  opt('clusterCidr', '<cidr,...>', 'cluster pod CIDR(s), at most one per family', '10.244.0.0/16'),
  opt('blockSize', '<bits>', 'prefix length of each node block (IPv4)', '24'),
  opt('podCidr', '<cidr,...>', 'fixed pod block for this node (default: claim one through the mesh)'),
  opt('backend', '<auto|kernel|userspace>', 'WireGuard implementation', 'auto'),
  opt('mtu', '<auto|bytes>', 'WireGuard interface MTU', 'auto'),
  opt('stateDir', '<dir>', 'persistent state (keys, pod block, addresses)', '/var/lib/weft'),
  opt('runDir', '<dir>', 'runtime directory (API socket)', '/run/weft'),
  opt('meshKeyFile', '<path>', 'file holding the base64 32-byte mesh key (mode 0600)'),
  opt('resync', '<duration>', 'periodic full reconcile interval, e.g. 30s', '30s'),
  opt('dnsZone', '<zone>', 'DNS zone served for pods and nodes', 'weft.local'),
  opt('dnsListen', '<addr:port,...>', 'extra DNS listen addresses', ''),
  opt('dnsTtl', '<seconds>', 'TTL of DNS answers', '5'),
  opt('logLevel', '<level>', `log level (${LOG_LEVELS.join('|')})`, 'info'),
  opt('kubeconfig', '<path>', 'kubeconfig for the Kubernetes source (default: in-cluster when available)'),
  opt('metricsAddr', '<addr:port>', 'TCP address serving /metrics, /healthz and /readyz'),
  opt('leaveOnExit', '<true|false>', 'announce a graceful mesh leave on SIGTERM (for decommissioning a node)', 'false'),
  opt('keyRotation', '<duration|off>', 'rotate the WireGuard key on this schedule, e.g. 24h (off by default)', 'off'),
  opt('joinPort', '<port>', 'TCP port of the join listener for `weft join` tokens (0 = off)', '7947'),
  opt('meshProfile', '<lan|wan>', 'mesh timing profile: wan for meshes spanning clouds or the internet (slower probes, longer suspicion)', 'lan'),
  opt('relay', '<auto|on|off>', 'relay WireGuard traffic for peers that cannot reach each other (auto: when this node is not behind NAT)', 'auto'),
  opt('relayPorts', '<lo-hi>', 'UDP port range used for relaying (two ports per relayed pair)', DEFAULT_RELAY_PORTS),
  opt('relayAfter', '<duration>', 'how long a direct link must fail before it is relayed', '30s'),
  opt('relayRetry', '<duration>', 'how long a pair stays relayed before its direct link is retried, once the mesh reaches the peer directly again (doubled per failed retry)', '5m'),
  opt('probeInterval', '<duration>', 'link prober period (probes peers without a recent handshake)', '10s'),
  opt('tokenSecret', '<name|off>', 'in-cluster: the Secret in the agent namespace that mirrors join tokens (off: no mirror)', 'weft-join-tokens'),
];

/** Raw values as they come from the command line: strings (or undefined when not given). */
export type RawOptions = Readonly<Record<string, string | undefined>>;

const MAX_VALUE_LEN = 4096;

/**
 * Builds the agent {@link Config} from raw flag values and an environment.
 * Precedence: flag, then `WEFT_*` env var, then default. Throws {@link ConfigError} on the first bad value.
 */
export function parseConfig(flags: RawOptions, env: Readonly<Record<string, string | undefined>>, defaults: { hostname?: string } = {}): Config {
  const raw = (spec: OptionSpec): { value: string | undefined; from: string } => {
    const f = flags[spec.key];
    if (f !== undefined) return { value: f, from: spec.flag };
    const e = env[spec.env];
    if (e !== undefined && e !== '') return { value: e, from: spec.env };
    return { value: spec.default, from: `${spec.flag} (default)` };
  };
  const field = <T>(key: string, parse: (v: string | undefined, fail: (why: string) => never) => T): T => {
    const spec = AGENT_OPTIONS.find((o) => o.key === key);
    if (!spec) throw new Error(`config: unknown option ${key}`);
    const { value, from } = raw(spec);
    const fail = (why: string): never => {
      const shown = value === undefined ? '(unset)' : JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
      throw new ConfigError(spec.flag, `config: ${spec.flag} / ${spec.env}: ${shown} ${why}`);
    };
    if (value !== undefined && value.length > MAX_VALUE_LEN) fail(`is longer than ${MAX_VALUE_LEN} characters`);
    void from;
    return parse(value?.trim(), fail);
  };

  const name = field('name', (v, fail) => {
    const n = v === undefined || v === '' ? (defaults.hostname ?? hostname()) : v;
    if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(n)) fail('is not a valid node name (lowercase letters, digits, "-" and ".", at most 253)');
    return n;
  });
  const seeds = field('seeds', (v, fail) => list(v).map((s) => hostPort(s, fail, 'seed')));
  const listenAddr = field('listenAddr', (v, fail) => {
    if (v === undefined || v === '') return undefined;
    if (isIP(v) === 0) fail('is not an IP address');
    return v;
  });
  const meshPort = field('meshPort', (v, fail) => port(v, fail));
  const wgPort = field('wgPort', (v, fail) => port(v, fail));
  const ifname = field('ifname', (v, fail) => {
    if (v === undefined || !/^[A-Za-z0-9_.-]{1,15}$/.test(v) || v === '.' || v === '..') fail('is not a valid interface name (1-15 of A-Z a-z 0-9 _ . -)');
    return v as string;
  });
  const clusterCIDRs = field('clusterCidr', (v, fail) => {
    const cidrs = list(v).map((c) => canonicalCIDR(c, fail));
    if (cidrs.length === 0) fail('must name at least one CIDR');
    if (cidrs.length > 2 || (cidrs.length === 2 && family(cidrs[0]!) === family(cidrs[1]!))) fail('must hold at most one CIDR per family');
    return cidrs;
  });
  const blockSize = field('blockSize', (v, fail) => {
    const n = int(v, fail);
    const v4 = clusterCIDRs.find((c) => family(c) === 4);
    const minLen = v4 ? prefixLen(v4) : 0;
    if (n < Math.max(minLen, 1) || n > 30) fail(`must be between ${Math.max(minLen, 1)} (the cluster CIDR's prefix) and 30`);
    return n;
  });
  const podCIDRs = field('podCidr', (v, fail) => {
    const cidrs = list(v).map((c) => canonicalCIDR(c, fail));
    for (const c of cidrs) {
      const outer = clusterCIDRs.find((k) => family(k) === family(c));
      if (!outer || !cidrContains(outer, c)) fail(`is not inside the cluster CIDR (${clusterCIDRs.join(',')})`);
      if (family(c) === 4 && prefixLen(c) !== blockSize) fail(`must be a /${blockSize} (--block-size)`);
      if (family(c) === 4 && prefixLen(c) > 30) fail('leaves no room for pods');
    }
    if (cidrs.length > 2 || (cidrs.length === 2 && family(cidrs[0]!) === family(cidrs[1]!))) fail('must hold at most one CIDR per family');
    return cidrs;
  });
  const backend = field('backend', (v, fail) => oneOf(v, BACKENDS, fail));
  const mtu = field('mtu', (v, fail): number | 'auto' => {
    if (v === undefined || v === 'auto') return 'auto';
    const n = int(v, fail);
    if (n < 1280 || n > 65_535) fail('must be "auto" or between 1280 and 65535');
    return n;
  });
  const stateDir = field('stateDir', (v, fail) => absPath(v, fail));
  const runDir = field('runDir', (v, fail) => absPath(v, fail));
  const socketPath = `${runDir.replace(/\/+$/, '')}/weft.sock`;
  if (Buffer.byteLength(socketPath) > 107) {
    throw new ConfigError('--run-dir', `config: --run-dir / WEFT_RUN_DIR: ${JSON.stringify(runDir)} is too long for a unix socket path`);
  }
  const meshKeyFile = field('meshKeyFile', (v, fail) => (v === undefined || v === '' ? undefined : absPath(v, fail)));
  const resyncMs = field('resync', (v, fail) => {
    const ms = parseDuration(v ?? '', fail);
    if (ms < 1000 || ms > 24 * 3_600_000) fail('must be between 1s and 24h');
    return ms;
  });
  const dnsZone = field('dnsZone', (v, fail) => {
    const z = (v ?? '').toLowerCase().replace(/\.$/, '');
    const label = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
    if (z === '' || z.length > 200 || !z.split('.').every((l) => label.test(l))) fail('is not a valid DNS zone');
    return z;
  });
  const dnsListen = field('dnsListen', (v, fail) =>
    list(v).map((s) => {
      const hp = hostPort(s, fail, 'address');
      if (isIP(hp.host) === 0) fail(`has ${JSON.stringify(hp.host)}, which is not an IP address`);
      return hp;
    }),
  );
  const dnsTtl = field('dnsTtl', (v, fail) => {
    const n = int(v, fail);
    if (n < 0 || n > 86_400) fail('must be between 0 and 86400 seconds');
    return n;
  });
  const logLevel = field('logLevel', (v, fail) => oneOf(v, LOG_LEVELS, fail));
  const kubeconfig = field('kubeconfig', (v, fail) => (v === undefined || v === '' ? undefined : absPath(v, fail)));
  const metricsAddr = field('metricsAddr', (v, fail) => {
    if (v === undefined || v === '') return undefined;
    const hp = hostPort(v, fail, 'address');
    if (isIP(hp.host) === 0) fail('must be an IP address and port');
    return hp;
  });

  const leaveOnExit = field('leaveOnExit', (v, fail) => {
    const b = (v ?? 'false').toLowerCase();
    if (!['true', 'false', '1', '0', 'yes', 'no'].includes(b)) fail('is not a boolean (true or false)');
    return b === 'true' || b === '1' || b === 'yes';
  });

  const joinPort = field('joinPort', (v, fail) => {
    const n = int(v, fail);
    if (n < 0 || n > 65_535) fail('must be between 0 (off) and 65535');
    return n;
  });

  const keyRotationMs = field('keyRotation', (v, fail) => {
    if (v === undefined || v === '' || v === 'off' || v === '0') return 0;
    const ms = parseDuration(v, fail);
    if (ms < 60_000 || ms > 365 * 86_400_000) fail('must be off or between 1m and 365d');
    return ms;
  });
  const meshProfile = field('meshProfile', (v, fail) => oneOf(v, ['lan', 'wan'] as const, fail));
  const relay = field('relay', (v, fail) => oneOf(v, ['auto', 'on', 'off'] as const, fail));
  const relayPorts = field('relayPorts', (v, fail): readonly [number, number] => {
    const m = /^(\d{1,5})-(\d{1,5})$/.exec(v ?? '');
    if (!m) return fail('is not a port range lo-hi (e.g. 51900-51999)');
    const lo = Number(m[1]);
    const hi = Number(m[2]);
    if (lo < 1024 || hi > 65_535 || lo > hi) fail('must be a range within 1024-65535 with lo <= hi');
    if (hi - lo + 1 < 2) fail('must hold at least 2 ports (one relayed pair)');
    if (wgPort >= lo && wgPort <= hi) fail(`holds the WireGuard port ${wgPort}`);
    if (meshPort >= lo && meshPort <= hi) fail(`holds the mesh port ${meshPort}`);
    return [lo, hi];
  });
  const relayAfterMs = field('relayAfter', (v, fail) => {
    const ms = parseDuration(v ?? '', fail);
    if (ms < 1000 || ms > 3_600_000) fail('must be between 1s and 1h');
    return ms;
  });
  const relayRetryMs = field('relayRetry', (v, fail) => {
    const ms = parseDuration(v ?? '', fail);
    if (ms < 10_000 || ms > 86_400_000) fail('must be between 10s and 24h');
    return ms;
  });
  const probeIntervalMs = field('probeInterval', (v, fail) => {
    const ms = parseDuration(v ?? '', fail);
    if (ms < 1000 || ms > 120_000) fail('must be between 1s and 2m (a link is probed when its handshake is older than 150 s)');
    return ms;
  });
  const tokenSecret = field('tokenSecret', (v, fail): string | undefined => {
    if (v === 'off') return undefined;
    // A Secret name is a DNS-1123 subdomain.
    if (v === undefined || v.length > 253 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(v)) fail('is not a Secret name (DNS-1123 subdomain) or off');
    return v;
  });

  return deepFreeze({
    name, seeds, listenAddr, meshPort, wgPort, ifname, clusterCIDRs, blockSize, podCIDRs, backend, mtu,
    stateDir, runDir, socketPath, meshKeyFile, resyncMs, dnsZone, dnsListen, dnsTtl, logLevel, kubeconfig, metricsAddr, leaveOnExit, joinPort, keyRotationMs, meshProfile,
    relay, relayPorts, relayAfterMs, relayRetryMs, probeIntervalMs, tokenSecret,
  });
}

/** Parses `500ms`, `30s`, `5m`, `24h`, `1h30m` (or a bare number of seconds) into milliseconds. */
export function parseDuration(v: string, fail: (why: string) => never): number {
  const s = v.trim();
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * unit[m[2]!]!;
    consumed = re.lastIndex;
  }
  if (s === '' || consumed !== s.length) fail('is not a duration (e.g. 500ms, 30s, 5m, 24h)');
  return Math.round(total);
}

/** Formats a {@link HostPort} as `host:port`, bracketing IPv6 literals. */
export function formatHostPort(hp: HostPort): string {
  return isIP(hp.host) === 6 ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

function list(v: string | undefined): string[] {
  if (v === undefined) return [];
  return v.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function int(v: string | undefined, fail: (why: string) => never): number {
  if (v === undefined || !/^-?\d{1,9}$/.test(v)) fail('is not an integer');
  return Number(v);
}

function port(v: string | undefined, fail: (why: string) => never): number {
  const n = int(v, fail);
  if (n < 1 || n > 65_535) fail('is not a port (1-65535)');
  return n;
}

function hostPort(s: string, fail: (why: string) => never, what: string): HostPort {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:\s[\]]+):(\d{1,5})$/.exec(s);
  if (!m) fail(`has ${what} ${JSON.stringify(s)}, expected host:port or [ipv6]:port`);
  const host = m![1]!;
  const p = Number(m![2]);
  if (p < 1 || p > 65_535) fail(`has ${what} ${JSON.stringify(s)} with a port outside 1-65535`);
  if (isIP(host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(host)) fail(`has ${what} ${JSON.stringify(s)} whose host is neither an IP nor a DNS name`);
  return { host, port: p };
}

function oneOf<T extends string>(v: string | undefined, choices: readonly T[], fail: (why: string) => never): T {
  if (v === undefined || !(choices as readonly string[]).includes(v)) fail(`is not one of ${choices.join(', ')}`);
  return v as T;
}

function absPath(v: string | undefined, fail: (why: string) => never): string {
  if (v === undefined || !v.startsWith('/') || v.includes('\0')) fail('is not an absolute path');
  return v as string;
}

/** 4 or 6 for a canonical CIDR string. */
export function family(cidr: string): 4 | 6 {
  return cidr.includes(':') ? 6 : 4;
}

function prefixLen(cidr: string): number {
  return Number(cidr.slice(cidr.indexOf('/') + 1));
}

/** Validates a CIDR and returns it in canonical form; host bits must be zero. */
function canonicalCIDR(c: string, fail: (why: string) => never): string {
  if (!/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(c) || !IPCIDR.isValidCIDR(c)) fail(`has ${JSON.stringify(c)}, which is not a CIDR`);
  let parsed: IPCIDR;
  try {
    parsed = new IPCIDR(c);
  } catch {
    return fail(`has ${JSON.stringify(c)}, which is not a CIDR`);
  }
  const start = parsed.start<IPCIDR.Address>({ type: 'addressObject' }).correctForm();
  const len = prefixLen(c);
  const canonical = `${start}/${len}`;
  const given = `${IPCIDR.createAddress(c.slice(0, c.indexOf('/'))).correctForm()}/${len}`;
  if (canonical !== given) fail(`has host bits set in ${JSON.stringify(c)} (did you mean ${canonical}?)`);
  return canonical;
}

function cidrContains(outer: string, inner: string): boolean {
  if (family(outer) !== family(inner) || prefixLen(inner) < prefixLen(outer)) return false;
  const o = new IPCIDR(outer);
  const i = new IPCIDR(inner);
  return o.contains(i.start<string>()) && o.contains(i.end<string>());
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
