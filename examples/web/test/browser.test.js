'use strict';
// The example end to end in headless Debian Chromium: the page (with the stand-in SR) -> Flask
// backend (examples/web/app.py) -> real sidecar on a Unix socket, started by scripts/test.d/60-node.sh.
// For each branch of Synerise's flow: exactly which SR calls happened, with which arguments, and a
// token that verifies with jose against the openssl-made public key and carries the right uuid.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const jose = require('jose');
const { chromium } = require('playwright-core');

const need = (name) => {
  if (!process.env[name]) throw new Error(`${name} is not set: run through scripts/test.d/60-node.sh`);
  return process.env[name];
};

const EMAIL = 'customer@synerise.com';
const PASSWORD = 'demo-password';
const COOKIE_UUID = '0f8fad5b-d9cb-469f-a165-70867728950e';
const EMAIL_UUID5 = '345d4c8f-5aff-591d-a19c-1ca48923d9ee'; // uuid5(url, "someString" + EMAIL)
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'];

/** Java String.hashCode over UTF-16 units, int32, decimal -- computed here, independently of the page. */
function javaHash(s) {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (Math.imul(31, h) + s.charCodeAt(i)) | 0;
  return String(h);
}

let flask;
let flaskLog = '';
let context;
let userDataDir;
let base;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function waitHttp(url, timeoutMs = 30000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (flask.exitCode !== null) throw new Error(`example app exited ${flask.exitCode}: ${flaskLog}`);
    try { if ((await fetch(url)).ok) return; } catch { /* not up yet */ }
    if (Date.now() > until) throw new Error(`example app not up: ${flaskLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  flask = spawn(need('SC_TEST_PYTHON'), [path.join(__dirname, '..', 'app.py')], {
    env: { ...process.env, SIDECAR_ADDR: need('SC_TEST_UNIX'), PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  flask.stdout.on('data', (d) => { flaskLog += d; });
  flask.stderr.on('data', (d) => { flaskLog += d; });
  await waitHttp(`${base}/`);
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_FLAGS,
  });
});

after(async () => {
  if (context) await context.close();
  if (flask && flask.exitCode === null) {
    const exited = new Promise((r) => flask.once('exit', r));
    flask.kill('SIGTERM');
    await exited;
  }
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
});

/** Fresh browser state with the given SDK cookies, log in through the form, and report what happened. */
async function login({ email = EMAIL, password = PASSWORD, delivery = 'sdk', cookies = {} }) {
  await context.clearCookies();
  await context.addCookies(Object.entries(cookies).map(([name, value]) => ({ name, value, url: base })));
  const page = await context.newPage();
  try {
    await page.goto(`${base}/`);
    await page.evaluate(() => localStorage.clear());
    await page.fill('#email', email);
    await page.fill('#password', password);
    await page.selectOption('#delivery', delivery);
    await page.click('button[type=submit]');
    await page.waitForSelector('#result[data-state="done"], #result[data-state="error"]');
    return await page.evaluate(() => ({
      state: document.getElementById('result').dataset.state,
      text: document.getElementById('result').textContent,
      calls: window.__srCalls,
      stored: localStorage.getItem('snr-token'),
      cookies: Object.fromEntries(document.cookie.split('; ').filter(Boolean).map((c) => {
        const at = c.indexOf('=');
        return [c.slice(0, at), decodeURIComponent(c.slice(at + 1))];
      })),
    }));
  } finally {
    await page.close();
  }
}

async function verify(jwt) {
  const key = await jose.importSPKI(fs.readFileSync(need('SC_TEST_PUBLIC_PEM'), 'utf8'), 'RS256');
  const { payload, protectedHeader } = await jose.jwtVerify(jwt, key, { algorithms: ['RS256'] });
  assert.deepEqual(protectedHeader, { alg: 'RS256', typ: 'JWT' });
  assert.deepEqual(Object.keys(payload).sort(), ['email', 'exp', 'uuid']);
  return payload;
}

const sdkCookie = (hash) => `host:127.0.0.1&uuid:${COOKIE_UUID}&identityHash:${hash}&init:1`;

test('no identity hash yet: set the cookie uuid and hash, then the token', async () => {
  const hash = javaHash(EMAIL);
  const r = await login({ cookies: { _snrs_uuid: COOKIE_UUID } });
  assert.equal(r.state, 'done', r.text);
  const jwt = r.calls.at(-1).args[0];
  assert.deepEqual(r.calls, [
    { method: 'getIdentityHash', args: [], result: '' },
    { method: 'hashIdentity', args: [EMAIL], result: hash },
    { method: 'setUuidAndIdentityHash', args: [hash, COOKIE_UUID], result: null },
    { method: 'setAccessToken', args: [jwt], result: null },
  ]);
  assert.deepEqual(await verify(jwt).then((p) => [p.uuid, p.email]), [COOKIE_UUID, EMAIL]);
  assert.equal(r.stored, jwt);
  assert.equal(JSON.parse(r.text).outcome, 'new_identity');
  assert.equal(r.cookies._snrs_uuid, COOKIE_UUID);
  assert.match(r.cookies._snrs_p, new RegExp(`identityHash:${hash}`));
});

test('same identity hash: only the token', async () => {
  const hash = javaHash(EMAIL);
  const r = await login({ cookies: { _snrs_uuid: COOKIE_UUID, _snrs_p: sdkCookie(hash) } });
  assert.equal(r.state, 'done', r.text);
  const jwt = r.calls.at(-1).args[0];
  assert.deepEqual(r.calls, [
    { method: 'getIdentityHash', args: [], result: hash },
    { method: 'hashIdentity', args: [EMAIL], result: hash },
    { method: 'setAccessToken', args: [jwt], result: null },
  ]);
  assert.equal((await verify(jwt)).uuid, COOKIE_UUID);
  assert.equal(JSON.parse(r.text).outcome, 'same_identity');
});

test("someone else's identity hash: a new UUIDv5, set with the hash, then the token", async () => {
  const other = javaHash('someone.else@example.com');
  const hash = javaHash(EMAIL);
  assert.notEqual(other, hash);
  const r = await login({ cookies: { _snrs_uuid: COOKIE_UUID, _snrs_p: sdkCookie(other) } });
  assert.equal(r.state, 'done', r.text);
  const jwt = r.calls.at(-1).args[0];
  assert.deepEqual(r.calls, [
    { method: 'getIdentityHash', args: [], result: other },
    { method: 'hashIdentity', args: [EMAIL], result: hash },
    { method: 'setUuidAndIdentityHash', args: [hash, EMAIL_UUID5], result: null },
    { method: 'setAccessToken', args: [jwt], result: null },
  ]);
  const claims = await verify(jwt);
  assert.deepEqual([claims.uuid, claims.email], [EMAIL_UUID5, EMAIL]);
  assert.equal(r.cookies._snrs_uuid, EMAIL_UUID5);
  assert.equal(JSON.parse(r.text).outcome, 'switched_identity');
});

test('a non-ASCII email hashes the same in the browser and the sidecar (UTF-16 units)', async () => {
  const email = 'josé@example.com';
  const r = await login({ email, cookies: { _snrs_uuid: COOKIE_UUID } });
  assert.equal(r.state, 'done', r.text);
  assert.equal(javaHash(email), '1626701080');
  assert.deepEqual(r.calls.slice(1, 3).map((c) => [c.method, c.args]), [
    ['hashIdentity', [email]], ['setUuidAndIdentityHash', ['1626701080', COOKIE_UUID]],
  ]);
  assert.equal((await verify(r.stored)).email, email);
});

test('cookie delivery: _snrs_token is set, readable by the page (not HttpOnly), and no setAccessToken', async () => {
  const hash = javaHash(EMAIL);
  const r = await login({ delivery: 'cookie', cookies: { _snrs_uuid: COOKIE_UUID } });
  assert.equal(r.state, 'done', r.text);
  assert.deepEqual(r.calls, [
    { method: 'getIdentityHash', args: [], result: '' },
    { method: 'hashIdentity', args: [EMAIL], result: hash },
    { method: 'setUuidAndIdentityHash', args: [hash, COOKIE_UUID], result: null },
  ]);
  assert.equal(r.stored, null);
  assert.ok(r.cookies._snrs_token, 'the page can read _snrs_token');
  assert.equal((await verify(r.cookies._snrs_token)).uuid, COOKIE_UUID);
  assert.equal(JSON.parse(r.text).jwt, undefined);
  const [cookie] = (await context.cookies(base)).filter((c) => c.name === '_snrs_token');
  assert.deepEqual([cookie.httpOnly, cookie.sameSite, cookie.path], [false, 'Lax', '/']);
});

test('a wrong password: the SDK is only asked for its hash, nothing is set', async () => {
  const r = await login({ password: 'wrong', cookies: { _snrs_uuid: COOKIE_UUID } });
  assert.equal(r.state, 'error');
  assert.match(r.text, /wrong email or password/);
  assert.deepEqual(r.calls, [{ method: 'getIdentityHash', args: [], result: '' }]);
  assert.equal(r.stored, null);
});

test('a tampered _snrs_uuid cookie: the backend answers 400 naming the field, nothing is set', async () => {
  const r = await login({ cookies: { _snrs_uuid: 'not-a-uuid' } });
  assert.equal(r.state, 'error');
  assert.deepEqual(r.calls.map((c) => c.method), ['getIdentityHash']);
  const res = await fetch(`${base}/api/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Cookie: '_snrs_uuid=not-a-uuid' },
    body: JSON.stringify({ email: EMAIL, password: PASSWORD, identityHash: '' }),
  });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).field, 'cookie_header._snrs_uuid');
});
