/** The embedded Web UI decodes through the API's codec server (issue 8): the dev server gets --ui-codec-endpoint. */
import { codecEndpointUrl } from '../../src/embedded';
import { temporalDevServerArgs } from '../../src/embedded/temporal';

describe('embedded Temporal Web UI codec endpoint (issue 8)', () => {
  const base = { rootDir: '/x', port: 7233, uiPort: 8233, namespace: 'default' };

  it('passes --ui-codec-endpoint with the Web UI, not when headless', () => {
    const args = temporalDevServerArgs({ ...base, uiCodecEndpoint: 'http://127.0.0.1:8080/codec' });
    expect(args.slice(args.indexOf('--ui-codec-endpoint'), args.indexOf('--ui-codec-endpoint') + 2)).toEqual(['--ui-codec-endpoint', 'http://127.0.0.1:8080/codec']);
    expect(temporalDevServerArgs({ ...base, headless: true, uiCodecEndpoint: 'http://127.0.0.1:8080/codec' })).not.toContain('--ui-codec-endpoint');
    expect(temporalDevServerArgs(base)).not.toContain('--ui-codec-endpoint');
  });

  it('is the API\'s /codec as a browser reaches it', () => {
    expect(codecEndpointUrl({ API_HOST: '127.0.0.1', API_PORT: 8080 })).toBe('http://127.0.0.1:8080/codec');
    expect(codecEndpointUrl({ API_HOST: '0.0.0.0', API_PORT: 9000 })).toBe('http://127.0.0.1:9000/codec');
    expect(codecEndpointUrl({ API_HOST: '::1', API_PORT: 9000 })).toBe('http://[::1]:9000/codec');
  });
});
