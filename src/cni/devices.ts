/**
 * Names of the node-side devices weft's pod wiring owns, shared by the CNI handler, the agent's
 * drift repair and `weft agent --uninstall`.
 */

/**
 * The `dummy` link carrying the gateway address of every local pod block (e.g. `10.244.3.1/24`)
 * and the `--dns-listen` addresses the node lacks. Pods reach it over their routed veth; its
 * connected block route drops packets for addresses of the block that have no pod (fail closed).
 */
export const GATEWAY_DEVICE = 'weftgw0';

/**
 * The pod bridge of weft before routed veths. Nodes upgraded from such a version may still have it
 * (with pods attached until they restart): the agent removes it once no port is left on it, and
 * `--uninstall` removes it unconditionally.
 */
export const LEGACY_BRIDGE = 'weftbr0';
