/*
 * A stand-in for Synerise's JS SDK (window.SR), for running this example and its browser test
 * without Synerise: same method names, the real identity hash (Java String.hashCode over UTF-16
 * code units, int32, decimal), state kept in the SDK's own cookies (_snrs_uuid, and identityHash
 * inside _snrs_p), the token stored as snr-token in localStorage. Every call is recorded in
 * window.__srCalls as {method, args, result}. In production, load Synerise's tracking code instead.
 */
(function () {
  'use strict';
  const calls = [];
  const cookie = (name) => {
    const hit = document.cookie.split('; ').find((c) => c.startsWith(`${name}=`));
    return hit ? decodeURIComponent(hit.slice(name.length + 1)) : '';
  };
  const params = () => Object.fromEntries(cookie('_snrs_p').split('&').filter(Boolean).map((kv) => {
    const at = kv.indexOf(':');
    return at < 0 ? [kv, ''] : [kv.slice(0, at), kv.slice(at + 1)];
  }));
  const setCookie = (name, value) => {
    document.cookie = `${name}=${encodeURIComponent(value)}; path=/; max-age=31536000; SameSite=Lax`;
  };
  const record = (method, fn) => (...args) => {
    const result = fn(...args);
    calls.push({ method, args, result: result === undefined ? null : result });
    return result;
  };
  const client = {
    getIdentityHash: record('getIdentityHash', () => params().identityHash || ''),
    hashIdentity: record('hashIdentity', (identifier) => {
      let h = 0;
      for (let i = 0; i < identifier.length; i++) h = (Math.imul(31, h) + identifier.charCodeAt(i)) | 0;
      return String(h);
    }),
    setUuidAndIdentityHash: record('setUuidAndIdentityHash', (identityHash, uuid) => {
      const p = { ...params(), uuid, identityHash };
      setCookie('_snrs_p', Object.entries(p).map(([k, v]) => `${k}:${v}`).join('&'));
      setCookie('_snrs_uuid', uuid);
    }),
    setAccessToken: record('setAccessToken', (jwt) => { localStorage.setItem('snr-token', jwt); }),
  };
  window.SR = { client };
  window.__srCalls = calls;
})();
