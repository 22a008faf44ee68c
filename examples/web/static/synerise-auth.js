/**
 * The frontend half of Synerise's JWT customer authentication, as one function.
 *
 * Flow (Synerise's "Authenticating requests with JSON Web Tokens"):
 *   1. read SR.client.getIdentityHash() (empty string when the browser has none);
 *   2. POST email + password + that hash to the backend, which authenticates the user and asks the
 *      sidecar (ResolveIdentity, with the browser's cookies) which branch applies;
 *   3. check the backend's hash equals SR.client.hashIdentity(email);
 *   4. when told (new or switched identity): SR.client.setUuidAndIdentityHash(hash, uuid);
 *   5. SR.client.setAccessToken(jwt) -- or, with delivery "cookie", the backend has set the
 *      _snrs_token cookie and the SDK picks it up itself.
 *
 * No framework: drop it into a React hook (see README.md, useSyneriseAuthentication) or call it
 * from a form handler. `sr` and `fetchImpl` are parameters so tests and SSR can pass their own.
 */

export class SyneriseAuthError extends Error {
  constructor(message, status = 0, body = {}) {
    super(message);
    this.name = 'SyneriseAuthError';
    this.status = status;
    this.body = body;
  }
}

/**
 * @param {object} options
 * @param {string} options.email the identifier, exactly as typed (Synerise hashes it as given)
 * @param {string} options.password handed to your backend's own authentication
 * @param {'sdk'|'cookie'} [options.delivery] token via SR.client.setAccessToken (default) or the _snrs_token cookie
 * @param {object} [options.sr] the Synerise JS SDK object, window.SR by default
 * @param {string} [options.endpoint] the backend login route
 * @returns {Promise<{uuid: string, identityHash: string, setIdentity: boolean, outcome: string, delivery: string}>}
 */
export async function authenticateWithSynerise({
  email, password, delivery = 'sdk', sr = globalThis.SR, endpoint = '/api/login',
  fetchImpl = (...args) => globalThis.fetch(...args),
}) {
  if (!sr || !sr.client) throw new SyneriseAuthError('the Synerise JS SDK (SR) is not loaded');
  const client = sr.client;
  const identityHash = client.getIdentityHash() || '';

  const response = await fetchImpl(endpoint, {
    method: 'POST',
    credentials: 'same-origin', // the backend forwards our _snrs_uuid / _snrs_p cookies to the sidecar
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ email, password, identityHash, delivery }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new SyneriseAuthError(body.error || `login failed (${response.status})`, response.status, body);
  }

  const expected = client.hashIdentity(email);
  if (body.identityHash !== expected) {
    // The backend and the SDK disagree on who this is: set nothing rather than a wrong identity.
    throw new SyneriseAuthError(`identity hash mismatch: backend ${body.identityHash}, SDK ${expected}`, 0, body);
  }
  if (body.setIdentity) client.setUuidAndIdentityHash(body.identityHash, body.uuid);
  if (body.jwt) client.setAccessToken(body.jwt);
  const { jwt, ...rest } = body; // the token stays with the SDK
  return rest;
}
