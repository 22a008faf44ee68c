'use strict';
// The Node client against a real sidecar (started by scripts/test.d/60-node.sh) on 127.0.0.1 and on a
// Unix socket, sidecars this file restarts, and grpc-js servers standing in for an older / slow / TLS server.
const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const {
  SidecarClient, InvalidArgumentError, UnavailableError, UnimplementedError, DeadlineExceededError, SidecarError,
  NO_RETRY, IdentityService, PROTO_DIR, PROTO_FILE,
} = require('..');
const h = require('./helpers');

const clients = [];
const client = (address, options) => { const c = new SidecarClient(address, options); clients.push(c); return c; };
after(() => clients.forEach((c) => c.close()));

test('the shipped proto is the repository one', () => {
  const repo = path.join(__dirname, '..', '..', '..', 'proto', PROTO_FILE);
  assert.equal(fs.readFileSync(path.join(PROTO_DIR, PROTO_FILE), 'utf8'), fs.readFileSync(repo, 'utf8'),
    'run `npm run sync-proto` in clients/node');
});

test('the TypeScript declarations describe the API (tsc --strict)', () => {
  const tsc = path.join(__dirname, '..', 'node_modules', '.bin', 'tsc');
  execFileSync(tsc, ['-p', path.join(__dirname, 'tsconfig.json')], { stdio: 'pipe' });
});

for (const transport of ['tcp', 'unix']) {
  describe(`over ${transport}`, () => {
    const address = () => (transport === 'tcp' ? h.env.tcp : h.env.unix);

    test('ResolveIdentity: the three branches, tokens verified with jose', async () => {
      const c = client(address());
      const pem = h.env.publicPem;
      const fresh = await c.resolveIdentity(h.EMAIL, { cookieUuid: h.COOKIE_UUID });
      const same = await c.resolveIdentity(h.EMAIL, { identityHash: h.EMAIL_HASH, cookieUuid: h.COOKIE_UUID });
      const switched = await c.resolveIdentity(h.EMAIL, {
        identityHash: '97', cookieHeader: `a=1; _snrs_uuid=${h.COOKIE_UUID}`,
      });
      assert.deepEqual([fresh.outcome, fresh.uuid, fresh.setIdentity], ['NEW_IDENTITY', h.COOKIE_UUID, true]);
      assert.deepEqual([same.outcome, same.uuid, same.setIdentity], ['SAME_IDENTITY', h.COOKIE_UUID, false]);
      assert.deepEqual([switched.outcome, switched.uuid, switched.setIdentity],
        ['SWITCHED_IDENTITY', h.EMAIL_UUID5, true]);
      for (const who of [fresh, same, switched]) {
        assert.equal(who.identityHash, h.EMAIL_HASH);
        const claims = await h.verifyJwt(who.token.jwt, pem);
        assert.deepEqual([claims.uuid, claims.email], [who.uuid, h.EMAIL]);
        assert.equal(who.token.expiresAt.getTime(), claims.exp * 1000);
      }
    });

    test('IssueToken with a ttl, GetPublicKey in every form', async () => {
      const c = client(address());
      const token = await c.issueToken(h.EMAIL, h.COOKIE_UUID, { ttl: 300 });
      const key = await c.getPublicKey();
      const claims = await h.verifyJwt(token.jwt, key.jwk); // the JWK alone verifies it
      assert.deepEqual(claims, { exp: token.expiresAt.getTime() / 1000, uuid: h.COOKIE_UUID, email: h.EMAIL });
      const left = token.expiresAt.getTime() - Date.now();
      assert.ok(left > 240000 && left <= 301000, `ttl honoured, ${left} ms left`);
      assert.equal(key.pem, h.env.publicPem);
      assert.equal(key.certificateCode, h.env.publicPem.split('\n').join(''));
      assert.equal(`-----BEGIN PUBLIC KEY-----${key.certificateCodeBare}-----END PUBLIC KEY-----`, key.certificateCode);
      assert.deepEqual([key.bits, key.keyId, key.jwk.kid], [2048, token.keyId, token.keyId]);
      assert.equal(key.nextKey, null);
    });

    test('INVALID_ARGUMENT becomes InvalidArgumentError with field and rule, not retried', async () => {
      const c = client(address(), { retry: { attempts: 5, initialBackoffMs: 10 } });
      const cases = [
        [() => c.resolveIdentity('no-at-sign', { cookieUuid: h.COOKIE_UUID }), 'email'],
        [() => c.resolveIdentity(h.EMAIL, { cookieUuid: 'nope' }), 'cookie_uuid'],
        [() => c.issueToken(h.EMAIL, 'nope'), 'uuid'],
        [() => c.issueToken(h.EMAIL, h.COOKIE_UUID, { ttl: 8 * 86400 }), 'ttl'],
      ];
      for (const [call, field] of cases) {
        const err = await call().then(() => null, (e) => e);
        assert.ok(err instanceof InvalidArgumentError, `${field}: ${err}`);
        assert.ok(err instanceof SidecarError);
        assert.equal(err.field, field);
        assert.ok(err.rule.length > 0 && !err.rule.includes(': '));
        assert.equal(err.details, `${field}: ${err.rule}`);
        assert.equal(err.codeName, 'INVALID_ARGUMENT');
      }
    });

    test('VerifyToken and EvaluateEvent where the server implements them', async (t) => {
      const c = client(address());
      const token = await c.issueToken(h.EMAIL, h.COOKIE_UUID);
      let verdict;
      try {
        verdict = await c.verifyToken(token.jwt);
      } catch (err) {
        if (err instanceof UnimplementedError) return t.skip('this build of the sidecar has no VerifyToken yet');
        throw err;
      }
      assert.deepEqual([verdict.valid, verdict.email, verdict.uuid], [true, h.EMAIL, h.COOKIE_UUID]);
      const decision = await c.evaluateEvent('form.submit', { changesCustomerData: true });
      assert.deepEqual([decision.accepted, decision.requiresJwt], [false, true]);
      return undefined;
    });
  });
}

/** A real grpc-js server offering IdentityService with only `handlers`. */
async function standIn(handlers, creds = grpc.ServerCredentials.createInsecure()) {
  const server = new grpc.Server();
  server.addService(IdentityService.service, handlers);
  const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', creds,
    (err, p) => (err ? reject(err) : resolve(p))));
  return { server, address: `127.0.0.1:${port}` };
}

test('an older server: UNIMPLEMENTED becomes UnimplementedError naming the RPC', async () => {
  const { server, address } = await standIn({});
  try {
    const c = client(address, { retry: { attempts: 5, initialBackoffMs: 10 } });
    await assert.rejects(c.verifyToken('a.b.c'), (e) => e instanceof UnimplementedError && e.rpc === 'VerifyToken'
      && /older sidecar/.test(e.message));
    await assert.rejects(c.evaluateEvent('form.submit'), UnimplementedError);
  } finally {
    server.forceShutdown();
  }
});

test('a slow server: the deadline gives DeadlineExceededError', async () => {
  let timer;
  const { server, address } = await standIn({
    GetPublicKey: (call, cb) => { timer = setTimeout(() => cb(null, {}), 3000); },
  });
  try {
    await assert.rejects(client(address, { timeoutMs: 200 }).getPublicKey(), DeadlineExceededError);
  } finally {
    clearTimeout(timer);
    server.forceShutdown();
  }
});

test('nothing listening: UnavailableError after the configured attempts', async () => {
  const address = `127.0.0.1:${await h.freePort()}`;
  const err = await client(address, { retry: { attempts: 3, initialBackoffMs: 10 } }).getPublicKey().catch((e) => e);
  assert.ok(err instanceof UnavailableError, String(err));
  assert.equal(err.attempts, 3);
  const once = await client(address, { retry: NO_RETRY }).getPublicKey().catch((e) => e);
  assert.equal(once.attempts, 1);
});

test('bad options are refused', () => {
  assert.throws(() => new SidecarClient('http://127.0.0.1:1'), /address/);
  assert.throws(() => new SidecarClient('127.0.0.1:1', { tls: { cert: 'x' } }), /cert and key/);
  assert.throws(() => new SidecarClient('127.0.0.1:1', { retry: { attempts: 0 } }), /attempts/);
});

for (const transport of ['tcp', 'unix']) {
  test(`retries ride out a restarted sidecar (${transport})`, async () => {
    const dir = h.tmpDir();
    const tcp = `127.0.0.1:${await h.freePort()}`;
    const unix = `unix://${path.join(dir, 's.sock')}`;
    const listen = `${tcp},${unix}`;
    const target = transport === 'tcp' ? tcp : unix;
    let proc = await h.startSidecar(listen);
    let next;
    try {
      const c = client(target, { retry: { attempts: 120, initialBackoffMs: 50, maxBackoffMs: 250 } });
      const before = await c.resolveIdentity(h.EMAIL, { cookieUuid: h.COOKIE_UUID });
      assert.equal(await h.stopProcess(proc), 0);
      await assert.rejects(client(target, { retry: NO_RETRY }).getPublicKey(), UnavailableError);
      next = new Promise((r) => setTimeout(r, 300)).then(() => h.startSidecar(listen));
      const afterRestart = await c.resolveIdentity(h.EMAIL, { cookieUuid: h.COOKIE_UUID });
      proc = await next;
      assert.equal(afterRestart.uuid, before.uuid);
      assert.equal(afterRestart.token.keyId, before.token.keyId);
    } finally {
      if (next) proc = await next.catch(() => proc);
      await h.stopProcess(proc);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('TLS and mutual TLS options reach the channel', async () => {
  const dir = h.tmpDir();
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=test-ca');
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:sidecar.test\n');
  for (const [name, ext] of [['server', ['-extfile', 'san.ext']], ['client', []]]) {
    ssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-out', `${name}.pem`, '-days', '1', ...ext);
  }
  const read = (f) => fs.readFileSync(path.join(dir, f));
  const creds = grpc.ServerCredentials.createSsl(read('ca.pem'),
    [{ private_key: read('server.key'), cert_chain: read('server.pem') }], true);
  const { server, address } = await standIn({
    GetPublicKey: (call, cb) => cb(null, { key_id: 'stand-in', bits: 2048 }),
  }, creds);
  try {
    const mtls = { ca: path.join(dir, 'ca.pem'), cert: read('client.pem'), key: read('client.key').toString(),
      serverName: 'sidecar.test' };
    const key = await client(address, { tls: mtls }).getPublicKey();
    assert.deepEqual([key.keyId, key.bits], ['stand-in', 2048]);
    const noCert = client(address, { tls: { ca: read('ca.pem'), serverName: 'sidecar.test' }, retry: NO_RETRY });
    await assert.rejects(noCert.getPublicKey(), SidecarError);
    const wrongName = client(address, { tls: { ...mtls, serverName: 'other.test' }, retry: NO_RETRY });
    await assert.rejects(wrongName.getPublicKey(), UnavailableError);
  } finally {
    server.forceShutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('getPublicKey carries the scheduled next key', async () => {
  const dir = h.tmpDir();
  const made = require('node:child_process').spawnSync(h.env.sidecarBin, ['keygen', '--out', dir], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  const keyId = /key_id (\S+)/.exec(made.stderr)[1];
  const at = new Date(Math.ceil(Date.now() / 1000) * 1000 + 3600 * 1000);
  fs.writeFileSync(path.join(dir, 'next-activates-at'), `${at.toISOString().replace('.000Z', 'Z')}\n`);
  const address = `127.0.0.1:${await h.freePort()}`;
  const proc = await h.startSidecar(address, {
    SIDECAR_NEXT_KEY_FILE: path.join(dir, 'private.pem'),
    SIDECAR_NEXT_KEY_ACTIVATES_AT: `@${path.join(dir, 'next-activates-at')}`,
  });
  const c = client(address);
  try {
    const key = await c.getPublicKey();
    assert.equal(key.nextKey.keyId, keyId);
    assert.equal(key.nextKey.pem, fs.readFileSync(path.join(dir, 'public.pem'), 'utf8'));
    assert.equal(key.nextKey.certificateCode, key.nextKey.pem.split('\n').join(''));
    assert.equal(key.nextKey.activatesAt.getTime(), at.getTime());
    const token = await c.issueToken(h.EMAIL, h.COOKIE_UUID);
    assert.equal(token.expiresAt.getTime(), at.getTime()); // no token outlives the switch
  } finally {
    c.close();
    await h.stopProcess(proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
