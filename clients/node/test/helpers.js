'use strict';
// Shared by the tests: the running sidecar that scripts/test.d/60-node.sh started, and a way to
// start (and restart) more `sidecar serve` processes on 127.0.0.1 / Unix sockets.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const jose = require('jose');
const { SidecarClient, NO_RETRY } = require('..');

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through scripts/test.d/60-node.sh`);
  return v;
}

const env = {
  get tcp() { return need('SC_TEST_TCP'); },
  get unix() { return need('SC_TEST_UNIX'); },
  get keyFile() { return need('SC_TEST_KEY_FILE'); },
  get publicPem() { return fs.readFileSync(need('SC_TEST_PUBLIC_PEM'), 'utf8'); },
  get sidecarBin() { return need('SC_TEST_SIDECAR_BIN'); },
  get python() { return need('SC_TEST_PYTHON'); },
};

const EMAIL = 'customer@synerise.com';
const EMAIL_HASH = '-374943845';
const EMAIL_UUID5 = '345d4c8f-5aff-591d-a19c-1ca48923d9ee'; // uuid5(url, "someString" + EMAIL)
const COOKIE_UUID = '0f8fad5b-d9cb-469f-a165-70867728950e';
const SALT = 'someString';

/** Verify with jose (not the PyJWT that signed it): exact header, exact claim set. */
async function verifyJwt(jwt, key) {
  const k = typeof key === 'string' ? await jose.importSPKI(key, 'RS256') : await jose.importJWK(key, 'RS256');
  const { payload, protectedHeader } = await jose.jwtVerify(jwt, k, { algorithms: ['RS256'] });
  assert.deepEqual(protectedHeader, { alg: 'RS256', typ: 'JWT' });
  assert.deepEqual(Object.keys(payload).sort(), ['email', 'exp', 'uuid']);
  return payload;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function tmpDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'sc-node-'));
}

async function waitServing(address, proc, timeoutMs = 30000) {
  const probe = new SidecarClient(address, { retry: NO_RETRY, timeoutMs: 1000 });
  const until = Date.now() + timeoutMs;
  try {
    for (;;) {
      if (proc && proc.exitCode !== null) throw new Error(`sidecar exited with ${proc.exitCode}: ${proc.stderrText}`);
      try { return await probe.getPublicKey(); } catch (err) {
        if (Date.now() > until) throw new Error(`sidecar at ${address} not serving: ${err.message}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    probe.close();
  }
}

/** Start `sidecar serve` listening on `listen` (comma-separated) with the test key; resolves once it serves. */
async function startSidecar(listen, extraEnv = {}) {
  const proc = spawn(env.sidecarBin, ['serve'], {
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SIDECAR_'))),
      SIDECAR_LISTEN: listen, SIDECAR_METRICS_ADDR: '', SIDECAR_KEY_FILE: env.keyFile, SIDECAR_UUID_SALT: SALT,
      ...extraEnv,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  proc.stderrText = '';
  proc.stderr.on('data', (d) => { proc.stderrText += d; });
  await waitServing(listen.split(',')[0], proc);
  return proc;
}

/** SIGTERM and wait for the exit; SIGKILL if it takes too long. */
function stopProcess(proc, timeoutMs = 15000) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc && proc.exitCode);
  return new Promise((resolve) => {
    const kill = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('exit', (code) => { clearTimeout(kill); resolve(code); });
    proc.kill('SIGTERM');
  });
}

module.exports = {
  env, EMAIL, EMAIL_HASH, EMAIL_UUID5, COOKIE_UUID, SALT, verifyJwt, freePort, tmpDir, startSidecar, stopProcess,
  waitServing,
};
