import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config.ts';

describe('agent options added for issue 7', () => {
  it('--join-port: default 7947, 0 = off, env, range', () => {
    expect(parseConfig({}, {}, { hostname: 'n1' }).joinPort).toBe(7947);
    expect(parseConfig({ joinPort: '0' }, {}, { hostname: 'n1' }).joinPort).toBe(0);
    expect(parseConfig({}, { WEFT_JOIN_PORT: '9000' }, { hostname: 'n1' }).joinPort).toBe(9000);
    expect(() => parseConfig({ joinPort: '70000' }, {}, { hostname: 'n1' })).toThrow(ConfigError);
    expect(() => parseConfig({ joinPort: 'x' }, {}, { hostname: 'n1' })).toThrow(/--join-port/);
  });

  it('--mesh-profile: lan by default, wan for meshes spanning clouds', () => {
    expect(parseConfig({}, {}, { hostname: 'n1' }).meshProfile).toBe('lan');
    expect(parseConfig({ meshProfile: 'wan' }, {}, { hostname: 'n1' }).meshProfile).toBe('wan');
    expect(parseConfig({}, { WEFT_MESH_PROFILE: 'wan' }, { hostname: 'n1' }).meshProfile).toBe('wan');
    expect(() => parseConfig({ meshProfile: 'fast' }, {}, { hostname: 'n1' })).toThrow(/--mesh-profile/);
  });
});
