/**
 * The Kubernetes integration's public surface for the agent: start the source, read or subscribe
 * to snapshots, merge them with the flags, and decide which pod names to drop.
 */
export { KubeConfigError, type KubeSourceConfig, type StartKubeSourceOptions, loadKubeConfig, startKubeSource } from './start.ts';
export {
  type KubeSnapshot,
  type KubeSnapshotListener,
  type KubeSourceStats,
  type NodeAnnotations,
  KubeSource,
  KubePatchError,
} from './source.ts';
export { type KubeInputConfig, type KubeInputs, kubeInputs } from './inputs.ts';
export { type CniPod, type KubePodView, type PodRemoval, DEFAULT_GRACE_MS, cniPodsFromAllocations, podsToRemove } from './pod-gc.ts';
export { type KubeNode, type KubePod, ANNOTATION_MESH_IP, ANNOTATION_PUBLIC_KEY } from './slim.ts';
