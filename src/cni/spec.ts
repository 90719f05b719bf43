/**
 * CNI spec vocabulary shared by the plugin executable and the agent-side handler: versions, error
 * codes, the result shape (1.1.0) and its conversion to older result versions, `CNI_ARGS` parsing,
 * and the request the plugin forwards to the agent. No I/O and no heavy imports: the plugin bundle
 * includes this file and its start-up time is part of ADD latency.
 */

/** Spec versions this plugin speaks, oldest first. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
/** A supported version. */
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
/** The version results are produced in before conversion. */
export const CURRENT_VERSION: CniVersion = '1.1.0';

/** Spec error codes (CNI SPEC.md "Error"), plus 999 for anything else. */
export const CniCode = Object.freeze({
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  ioFailure: 5,
  decoding: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  pluginNotAvailable: 50,
  limitedConnectivity: 51,
  generic: 999,
});

/** An error carrying a CNI code; both sides render it as `{cniVersion, code, msg, details}`. */
export class CniError extends Error {
  override name = 'CniError';
  readonly code: number;
  readonly details: string | undefined;
  constructor(code: number, msg: string, details?: string, options?: { cause?: unknown }) {
    super(msg, options);
    this.code = code;
    this.details = details;
  }
}

/** Commands of the spec. */
export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';

/** One interface in a result (1.1.0 shape). */
export interface CniInterface {
  readonly name: string;
  readonly mac?: string;
  readonly mtu?: number;
  /** Set (to the netns path) on interfaces inside the container. */
  readonly sandbox?: string;
}

/** One address in a result (1.1.0 shape). */
export interface CniIP {
  /** CIDR notation: the pod address with the block's prefix length. */
  readonly address: string;
  readonly gateway?: string;
  /** Index into `interfaces`. */
  readonly interface?: number;
}

/** One route in a result. */
export interface CniRoute {
  readonly dst: string;
  readonly gw?: string;
}

/** DNS settings in a result. */
export interface CniDns {
  readonly nameservers?: readonly string[];
  readonly domain?: string;
  readonly search?: readonly string[];
  readonly options?: readonly string[];
}

/** The ADD result in the current version's shape. */
export interface CniResult {
  readonly cniVersion: string;
  readonly interfaces: readonly CniInterface[];
  readonly ips: readonly CniIP[];
  readonly routes?: readonly CniRoute[];
  readonly dns?: CniDns;
}

/** What the plugin forwards to the agent for ADD/DEL/CHECK/GC/STATUS (decoded, validated, bounded). */
export interface ForwardedRequest {
  readonly command: Exclude<CniCommand, 'VERSION'>;
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  /** Parsed `CNI_ARGS` (`K8S_POD_NAME`, `K8S_POD_NAMESPACE`, ...). */
  readonly args: Readonly<Record<string, string>>;
  /** The plugin's network configuration as the runtime passed it (including `cniVersion`, `name`). */
  readonly config: Readonly<Record<string, unknown>>;
  readonly prevResult?: unknown;
}

/** Bounds on what the plugin accepts from the runtime. */
export const CNI_LIMITS = Object.freeze({ stdinBytes: 1 << 20, containerId: 256, ifname: 15, netns: 4096, args: 4096, argPairs: 32, attachments: 100_000 });

/** True when `v` is a version this plugin supports. */
export function isSupportedVersion(v: unknown): v is CniVersion {
  return typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

/** Compares dotted versions numerically; negative when a < b. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * Converts a current-version result to `version`'s shape: for 0.3.x/0.4.0 each IP gets
 * `version: "4"|"6"` and interface fields added later (`mtu`) are dropped.
 */
export function convertResult(result: CniResult, version: CniVersion): Record<string, unknown> {
  const base = { ...result, cniVersion: version } as Record<string, unknown>;
  if (compareVersions(version, '1.0.0') >= 0) return base;
  return {
    ...base,
    interfaces: result.interfaces.map(({ mtu: _mtu, ...rest }) => rest),
    ips: result.ips.map((ip) => ({ version: ip.address.includes(':') ? '6' : '4', ...ip })),
  };
}

/**
 * Parses `CNI_ARGS` ("K1=V1;K2=V2"). Throws {@link CniError} (code 4) on malformed pairs or when
 * over the bounds; unknown keys are kept (callers pick what they need).
 */
export function parseCniArgs(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!text) return out;
  if (text.length > CNI_LIMITS.args) throw new CniError(CniCode.invalidEnv, `CNI_ARGS is longer than ${CNI_LIMITS.args} bytes`);
  const pairs = text.split(';').filter((p) => p !== '');
  if (pairs.length > CNI_LIMITS.argPairs) throw new CniError(CniCode.invalidEnv, `CNI_ARGS has more than ${CNI_LIMITS.argPairs} pairs`);
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new CniError(CniCode.invalidEnv, `CNI_ARGS: malformed pair ${JSON.stringify(p.slice(0, 64))} (want KEY=VALUE)`);
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

/**
 * Host-side veth name for an attachment: "wv" + 11 hex chars of a hash of (containerId, ifname),
 * so DEL can find it again without state and without the pod namespace. 13 chars (< IFNAMSIZ).
 */
export function hostVethName(containerId: string, ifname: string): string {
  // FNV-1a 64, folded to 44 bits; collision odds are negligible for the pods of one node.
  let h = 0xcbf29ce484222325n;
  const s = `${containerId}/${ifname}`;
  for (let i = 0; i < s.length; i++) {
    h ^= BigInt(s.charCodeAt(i) & 0xffff);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return `wv${(h >> 20n).toString(16).padStart(11, '0').slice(-11)}`;
}
