// The Node service a team would write instead of the sidecar, for bench/run.py to measure beside it.
//
// sidecar.v1.IdentityService/IssueToken from proto/sidecar/v1/identity.proto (loaded at start by
// @grpc/proto-loader, as a team without a build step would), served by @grpc/grpc-js; the token is
// jsonwebtoken's RS256 with the sidecar's header and claims: header {"alg":"RS256","typ":"JWT"},
// payload exactly {"exp","uuid","email"} (no iat), exp = now + ttl rounded down (default 24 h).
// The PEM is parsed once at start into a KeyObject; the response carries expires_at and the key's
// RFC 7638 thumbprint as key_id, computed once. Bad input gets INVALID_ARGUMENT naming the field.
//
//   node server.js KEY_FILE [HOST:PORT]     (default 127.0.0.1:0)
//
// Prints "listening HOST:PORT" on stdout once bound; SIGTERM or SIGINT stops it.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const jwt = require('jsonwebtoken');

const [keyFile, listen = '127.0.0.1:0'] = process.argv.slice(2);
if (!keyFile) {
  console.error('usage: node server.js KEY_FILE [HOST:PORT]');
  process.exit(2);
}

const PROTO_ROOT = path.resolve(__dirname, '..', '..', '..', 'proto');
const DEFAULT_TTL_S = 24 * 3600;
const MAX_TTL_S = 7 * 24 * 3600;
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const SPACE_OR_CONTROL = /[\s\x00-\x1f\x7f]/;

// The key, parsed once, and its RFC 7638 thumbprint (required members, sorted, no whitespace).
const privateKey = crypto.createPrivateKey(fs.readFileSync(keyFile));
const jwk = crypto.createPublicKey(privateKey).export({ format: 'jwk' });
const keyId = crypto.createHash('sha256')
  .update(JSON.stringify({ e: jwk.e, kty: 'RSA', n: jwk.n }))
  .digest('base64url');

const definition = protoLoader.loadSync('sidecar/v1/identity.proto', {
  includeDirs: [PROTO_ROOT], keepCase: true, longs: Number, enums: String, defaults: false,
});
const sidecarV1 = grpc.loadPackageDefinition(definition).sidecar.v1;

function invalid(field, rule) {
  const err = new Error(`${field}: ${rule}`);
  err.code = grpc.status.INVALID_ARGUMENT;
  return err;
}

function checkEmail(email) {
  if (!email) return invalid('email', 'is required');
  if (email.length > 254) return invalid('email', 'must be at most 254 characters');
  if (SPACE_OR_CONTROL.test(email)) return invalid('email', 'must not contain whitespace or control characters');
  const at = email.indexOf('@');
  if (at <= 0 || at === email.length - 1 || email.indexOf('@', at + 1) !== -1) {
    return invalid('email', "must contain exactly one '@' with a non-empty part on each side");
  }
  return null;
}

function ttlSeconds(ttl) {
  if (!ttl) return DEFAULT_TTL_S;
  const seconds = Number(ttl.seconds || 0) + (ttl.nanos || 0) / 1e9;
  if (!(seconds >= 1 && seconds < MAX_TTL_S)) return null;
  return seconds;
}

function issueToken(call, callback) {
  const { email = '', uuid = '', ttl } = call.request;
  const bad = checkEmail(email);
  if (bad) return callback(bad);
  if (!UUID_RE.test(uuid)) return callback(invalid('uuid', 'must be a canonical UUID (8-4-4-4-12 hex digits)'));
  const seconds = ttlSeconds(ttl);
  if (seconds === null) return callback(invalid('ttl', 'must be between 1 second and 7 days'));
  const exp = Math.floor(Date.now() / 1000 + seconds);
  const token = jwt.sign({ exp, uuid: uuid.toLowerCase(), email }, privateKey,
    { algorithm: 'RS256', noTimestamp: true });
  return callback(null, { token: { jwt: token, expires_at: { seconds: exp, nanos: 0 }, key_id: keyId } });
}

const server = new grpc.Server();
server.addService(sidecarV1.IdentityService.service, { IssueToken: issueToken });
server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`cannot listen on ${listen}: ${err.message}`);
    process.exit(1);
  }
  const host = listen.slice(0, listen.lastIndexOf(':'));
  process.stdout.write(`listening ${host}:${port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.tryShutdown(() => process.exit(0)));
}
