/**
 * Named errors of the WireGuard backends. Messages start with a context prefix
 * (`wireguard:`, `uapi:`, `genl:`) and the device name; the underlying error is in `cause`.
 * No message ever contains a private or preshared key.
 */

/** A backend operation failed (base class of the backend errors). */
export class WireGuardError extends Error {
  override name = 'WireGuardError';
}

/** A caller passed a malformed update (bad key, CIDR, endpoint, port or keepalive); nothing was applied. */
export class WgInputError extends WireGuardError {
  override name = 'WgInputError';
}

/** The wireguard-go UAPI socket refused, timed out, or answered `errno=<n>` with n != 0. */
export class UapiError extends WireGuardError {
  override name = 'UapiError';
  /** The `errno=` value wireguard-go returned, when it returned one. */
  readonly errno: number | undefined;
  constructor(message: string, options?: { cause?: unknown; errno?: number }) {
    super(message, options);
    this.errno = options?.errno;
  }
}

/** A generic netlink request to the kernel `wireguard` family failed. */
export class GenlError extends WireGuardError {
  override name = 'GenlError';
  /** The positive errno the kernel returned, when it returned one. */
  readonly errno: number | undefined;
  constructor(message: string, options?: { cause?: unknown; errno?: number }) {
    super(message, options);
    this.errno = options?.errno;
  }
}

/** Neither the kernel module nor wireguard-go is available, or the requested one is not. */
export class BackendUnavailableError extends WireGuardError {
  override name = 'BackendUnavailableError';
}
