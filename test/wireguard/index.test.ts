import { execFileSync } from 'node:child_process';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { BackendUnavailableError, createWireGuardBackend, findExecutable } from '../../src/wireguard/index.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(JSON.parse(String(chunk)));
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

/** Whether this machine has the kernel module (the build machines do not; the VM lane does). */
const kernelPresent = (() => {
  try {
    return execFileSync('sh', ['-c', 'ls /sys/module/wireguard 2>/dev/null && echo yes || true'], { encoding: 'utf8' }).includes('yes');
  } catch {
    return false;
  }
})();

describe('createWireGuardBackend', () => {
  it.skipIf(kernelPresent)('auto falls back to userspace when the kernel has no wireguard family, and logs why (skipped: kernel module present)', async () => {
    const { logger, lines } = capture();
    // A directory holding an executable named wireguard-go: /bin/true stands in; nothing is started.
    const b = await createWireGuardBackend({ kind: 'auto', logger, userspace: { wireguardGo: '/bin/true' } });
    expect(b.kind).toBe('userspace');
    await b.close();
    const line = lines.find((l) => l.backend === 'userspace')!;
    expect(line.reason).toMatch(/kernel unavailable: .*family "wireguard" not found/);
    expect(line.component).toBe('wireguard');
  });

  it.skipIf(kernelPresent)('kernel requested without the module is a clear BackendUnavailableError (skipped: module present)', async () => {
    const { logger } = capture();
    await expect(createWireGuardBackend({ kind: 'kernel', logger })).rejects.toThrow(BackendUnavailableError);
  });

  it.skipIf(kernelPresent)('auto with neither names both reasons (skipped: module present)', async () => {
    const { logger } = capture();
    const err = await createWireGuardBackend({ kind: 'auto', logger, pathEnv: '/nonexistent' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    expect((err as Error).message).toMatch(/no backend available: .*not found.*wireguard-go not found on PATH/);
  });

  it('auto adopts a running wireguard-go for the interface even before probing the kernel', async () => {
    const { mkdtemp, rm } = await import('node:fs/promises');
    const { createServer } = await import('node:net');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'wwg-idx-'));
    // A UAPI socket that answers get like wireguard-go.
    const server = createServer({ allowHalfOpen: true }, (s) => {
      s.on('data', () => s.end('listen_port=51820\nerrno=0\n\n'));
    });
    await new Promise<void>((r) => server.listen(join(dir, 'wg9.sock'), r));
    try {
      const { logger, lines } = capture();
      const b = await createWireGuardBackend({ kind: 'auto', logger, ifname: 'wg9', userspace: { socketDir: dir, wireguardGo: '/bin/true' } });
      expect(b.kind).toBe('userspace');
      expect(lines.find((l) => l.backend === 'userspace')!.reason).toMatch(/already serves wg9/);
      await b.close();
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('userspace requested resolves wireguard-go on PATH or fails clearly', async () => {
    const { logger } = capture();
    await expect(createWireGuardBackend({ kind: 'userspace', logger, pathEnv: '' })).rejects.toThrow(/wireguard-go not found on PATH/);
    expect(await findExecutable('sh', process.env.PATH ?? '')).toMatch(/\/sh$/);
    expect(await findExecutable('/nonexistent/x', '')).toBeNull();
  });
});
