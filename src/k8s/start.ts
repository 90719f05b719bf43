/**
 * Wiring of the Kubernetes source for the agent: chooses the configuration (an explicit
 * `--kubeconfig`, else the in-cluster service account when running in a pod, else none) and starts
 * a {@link KubeSource} over the real client.
 */
import { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { BackoffPolicy, Clock } from './clock.ts';
import { type ClientTransportOptions, KubeSource, clientTransport } from './source.ts';

/** A Kubernetes configuration that cannot be loaded. */
export class KubeConfigError extends Error {
  override name = 'KubeConfigError';
}

/** What {@link startKubeSource} needs from the agent's Config (field names match `src/config.ts`). */
export interface KubeSourceConfig {
  /** This node's name; must equal the Kubernetes Node name. */
  readonly name: string;
  readonly meshPort: number;
  /** Path of a kubeconfig file (`--kubeconfig`); undefined = auto-detect in-cluster. */
  readonly kubeconfig: string | undefined;
}

/** Optional overrides, for tests and tuning. */
export interface StartKubeSourceOptions extends ClientTransportOptions {
  /** Environment used for in-cluster detection (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly clock?: Clock;
  readonly backoff?: BackoffPolicy;
  readonly listTimeoutMs?: number;
  readonly minWatchMs?: number;
}

/**
 * Loads the Kubernetes client configuration: the `kubeconfig` file when given, the in-cluster
 * service account when `KUBERNETES_SERVICE_HOST` is set, otherwise undefined (no Kubernetes: the
 * agent runs from flags and the mesh alone). Throws {@link KubeConfigError} when a given file
 * cannot be loaded.
 */
export function loadKubeConfig(kubeconfig: string | undefined, env: Readonly<Record<string, string | undefined>>): KubeConfig | undefined {
  const kc = new KubeConfig();
  try {
    if (kubeconfig !== undefined) {
      kc.loadFromFile(kubeconfig);
    } else if (env.KUBERNETES_SERVICE_HOST !== undefined && env.KUBERNETES_SERVICE_HOST !== '') {
      kc.loadFromCluster();
    } else {
      return undefined;
    }
  } catch (err) {
    throw new KubeConfigError(`k8s: load ${kubeconfig ?? 'in-cluster config'}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (kc.getCurrentCluster() === null) {
    throw new KubeConfigError(`k8s: load ${kubeconfig ?? 'in-cluster config'}: no current cluster`);
  }
  return kc;
}

/**
 * Creates and starts the agent's Kubernetes source, or returns undefined when there is no
 * Kubernetes configuration (not in a pod and no `--kubeconfig`). Never blocks on the API server:
 * it returns at once and the first snapshot with `synced: true` follows when the lists succeed.
 */
export function startKubeSource(cfg: KubeSourceConfig, logger: Logger, opts: StartKubeSourceOptions = {}): KubeSource | undefined {
  const kc = loadKubeConfig(cfg.kubeconfig, opts.env ?? process.env);
  if (kc === undefined) return undefined;
  const log = logger.child({ component: 'k8s' });
  const source = new KubeSource(clientTransport(kc, cfg.name, opts), {
    nodeName: cfg.name,
    meshPort: cfg.meshPort,
    logger: log,
    ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
    ...(opts.random !== undefined ? { random: opts.random } : {}),
    ...(opts.backoff !== undefined ? { backoff: opts.backoff } : {}),
    ...(opts.listTimeoutMs !== undefined ? { listTimeoutMs: opts.listTimeoutMs } : {}),
    ...(opts.minWatchMs !== undefined ? { minWatchMs: opts.minWatchMs } : {}),
  });
  log.info({ server: kc.getCurrentCluster()?.server, node: cfg.name }, 'kubernetes source starting');
  source.start();
  return source;
}
