'use strict';
// The package as a backend installs it: `npm pack` → a tarball, and a checkout's folder with
// --install-links, each into a fresh folder outside the repository; then an ES module, a CommonJS
// script and TypeScript (nodenext, both module kinds) use it by name against the real sidecar.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const h = require('./helpers');

const PKG = path.join(__dirname, '..');
const { name, version, dependencies } = require('../package.json');
const tsc = path.join(PKG, 'node_modules', '.bin', 'tsc');
let tmp;
before(() => { tmp = h.tmpDir(); });
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const npm = (cwd, ...args) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'],
  { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

function consumer(dir) {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'a-backend', private: true }));
  return dir;
}

const ESM = `
import { SidecarClient, InvalidArgumentError } from '${name}';
import whole from '${name}';
import { createRequire } from 'node:module';
const cjs = createRequire(import.meta.url)('${name}');
const out = { sameClass: SidecarClient === cjs.SidecarClient && whole.SidecarClient === SidecarClient };
for (const [t, address] of Object.entries({ tcp: process.env.SC_TEST_TCP, unix: process.env.SC_TEST_UNIX })) {
  const c = new SidecarClient(address);
  const who = await c.resolveIdentity('${h.EMAIL}', { cookieUuid: '${h.COOKIE_UUID}' });
  const err = await c.issueToken('${h.EMAIL}', 'nope').catch((e) => e);
  out[t] = { uuid: who.uuid, outcome: who.outcome, bad: err instanceof cjs.InvalidArgumentError && err instanceof InvalidArgumentError && err.field };
  c.close();
}
console.log(JSON.stringify(out));
`;

const CJS = `
const { SidecarClient } = require('${name}');
let deep = 'exported';
try { require('${name}/index.js'); } catch (e) { deep = e.code; }
const c = new SidecarClient(process.env.SC_TEST_UNIX);
c.getPublicKey().then((k) => { console.log(JSON.stringify({ bits: k.bits, deep, pkg: require('${name}/package.json').name })); c.close(); });
`;

const TS = `
import { SidecarClient, InvalidArgumentError, type Identity } from '${name}';
export async function login(email: string): Promise<string> {
  const who: Identity = await new SidecarClient('127.0.0.1:50051').resolveIdentity(email, { cookieHeader: '' });
  try { return who.token.jwt; } catch (e) { return e instanceof InvalidArgumentError ? e.field : ''; }
}
`;

function useIt(dir) {
  fs.writeFileSync(path.join(dir, 'esm.mjs'), ESM);
  fs.writeFileSync(path.join(dir, 'cjs.cjs'), CJS);
  const esm = JSON.parse(execFileSync(process.execPath, ['esm.mjs'], { cwd: dir, encoding: 'utf8' }));
  for (const t of ['tcp', 'unix']) assert.deepEqual(esm[t], { uuid: h.COOKIE_UUID, outcome: 'NEW_IDENTITY', bad: 'uuid' });
  assert.equal(esm.sameClass, true, 'import and require share one copy');
  const cjs = JSON.parse(execFileSync(process.execPath, ['cjs.cjs'], { cwd: dir, encoding: 'utf8' }));
  assert.deepEqual(cjs, { bits: 2048, deep: 'ERR_PACKAGE_PATH_NOT_EXPORTED', pkg: name });
  // The types resolve through "exports" for both module kinds (no `paths` here).
  fs.writeFileSync(path.join(dir, 'check.mts'), TS);
  fs.writeFileSync(path.join(dir, 'check.cts'), TS);
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', types: ['node'] },
    files: ['check.mts', 'check.cts'],
  }));
  execFileSync(tsc, ['-p', dir], { cwd: dir, stdio: 'pipe' });
  const installed = require(path.join(dir, 'node_modules', name, 'package.json'));
  assert.equal(installed.version, version);
  assert.ok(!fs.lstatSync(path.join(dir, 'node_modules', name)).isSymbolicLink(), 'a copy, not a link into the checkout');
}

test('dependency ranges, not pins', () => {
  for (const [dep, range] of Object.entries(dependencies)) assert.match(range, /^\^\d/, dep);
});

test('npm pack, then npm install <tarball> in a fresh folder', () => {
  const packed = JSON.parse(npm(PKG, 'pack', '--json', '--pack-destination', tmp));
  assert.equal(packed[0].name, name);
  const files = packed[0].files.map((f) => f.path).sort();
  assert.deepEqual(files, ['README.md', 'index.d.mts', 'index.d.ts', 'index.js', 'index.mjs', 'package.json',
    'proto/sidecar/v1/identity.proto']);
  const dir = consumer(path.join(tmp, 'from-tarball'));
  npm(dir, 'install', path.join(tmp, packed[0].filename));
  useIt(dir);
});

test('npm install --install-links <checkout>/clients/node in a fresh folder', () => {
  const dir = consumer(path.join(tmp, 'from-folder'));
  npm(dir, 'install', '--install-links', PKG);
  useIt(dir);
});
