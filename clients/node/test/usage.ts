// Compiled (not run) by types.test.js with `tsc --strict --noEmit`: the declarations describe the API.
import { SidecarClient, InvalidArgumentError, UnavailableError, type Identity, type Token } from '@synerise-sidecar/client';

async function login(email: string, identityHash: string, cookieHeader: string): Promise<string> {
  const sidecar = new SidecarClient('unix:///run/sidecar/sidecar.sock', {
    timeoutMs: 2000, retry: { attempts: 3 }, tls: { ca: '/etc/ca.pem', serverName: 'sidecar.internal' },
  });
  try {
    const who: Identity = await sidecar.resolveIdentity(email, { identityHash, cookieHeader, ttl: 3600 });
    const expires: Date = who.token.expiresAt;
    const branch: 'NEW_IDENTITY' | 'SAME_IDENTITY' | 'SWITCHED_IDENTITY' | 'UNSPECIFIED' = who.outcome;
    const t: Token = await sidecar.issueToken(email, who.uuid, { ttl: { seconds: 60 } });
    const bits: number = (await sidecar.getPublicKey()).bits;
    const ok: boolean = (await sidecar.verifyToken(t.jwt)).valid;
    const needs: boolean = (await sidecar.evaluateEvent('form.submit', { changesCustomerData: true })).requiresJwt;
    void [expires, branch, bits, ok, needs];
    return who.setIdentity ? `${who.identityHash}/${who.uuid}` : who.token.jwt;
  } catch (err) {
    if (err instanceof InvalidArgumentError) return `${err.field}: ${err.rule}`;
    if (err instanceof UnavailableError) return `down after ${err.attempts}`;
    throw err;
  } finally {
    sidecar.close();
  }
}

// @ts-expect-error the email is required
void new SidecarClient().resolveIdentity();
// @ts-expect-error outcome is a closed set
const wrong: Identity['outcome'] = 'MAYBE';
void [login, wrong];
