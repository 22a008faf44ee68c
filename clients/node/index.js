'use strict';
/**
 * Node client for the Synerise identity & token sidecar (sidecar.v1.IdentityService).
 *
 *   const { SidecarClient } = require('@synerise-sidecar/client');
 *   const sidecar = new SidecarClient('unix:///run/sidecar/sidecar.sock');
 *   const who = await sidecar.resolveIdentity('customer@synerise.com', { identityHash, cookieHeader: req.headers.cookie });
 *   // who.token.jwt -> SR.client.setAccessToken; if (who.setIdentity) SR.client.setUuidAndIdentityHash(who.identityHash, who.uuid)
 */
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

/** Folder holding the copy of proto/sidecar/v1/identity.proto this package ships. */
const PROTO_DIR = path.join(__dirname, 'proto');
const PROTO_FILE = 'sidecar/v1/identity.proto';

const definition = protoLoader.loadSync(PROTO_FILE, {
  includeDirs: [PROTO_DIR], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
});
const { IdentityService } = grpc.loadPackageDefinition(definition).sidecar.v1;

/** Deadline of one attempt unless the client or the call says otherwise. */
const DEFAULT_TIMEOUT_MS = 5000;
/** Retries on UNAVAILABLE only; every RPC of the sidecar is safe to repeat. */
const DEFAULT_RETRY = Object.freeze({ attempts: 4, initialBackoffMs: 100, maxBackoffMs: 2000, multiplier: 2, jitter: 0.2 });
const NO_RETRY = Object.freeze({ ...DEFAULT_RETRY, attempts: 1 });
/** Reconnect quickly: a sidecar is local, and a restart takes well under a second. */
const CHANNEL_OPTIONS = Object.freeze({
  'grpc.initial_reconnect_backoff_ms': 100, 'grpc.min_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000,
});

/** A call to the sidecar failed. `code` is the numeric gRPC status, `codeName` its name. */
class SidecarError extends Error {
  constructor(rpc, code, details) {
    super(`${rpc}: ${grpc.status[code]}: ${details}`);
    this.name = 'SidecarError';
    this.rpc = rpc;
    this.code = code;
    this.codeName = grpc.status[code];
    this.details = details;
  }
}

/** The request broke an input rule (`field: rule` from the server); nothing was signed. */
class InvalidArgumentError extends SidecarError {
  constructor(rpc, code, details) {
    super(rpc, code, details);
    this.name = 'InvalidArgumentError';
    const at = details.indexOf(': ');
    this.field = at >= 0 ? details.slice(0, at) : '';
    this.rule = at >= 0 ? details.slice(at + 2) : details;
  }
}

/** The sidecar could not be reached (or had no usable key) after every retry. */
class UnavailableError extends SidecarError {
  constructor(rpc, code, details, attempts) {
    super(rpc, code, details);
    this.name = 'UnavailableError';
    this.attempts = attempts;
  }
}

/** The server does not offer this RPC: it runs an older sidecar than this client. */
class UnimplementedError extends SidecarError {
  constructor(rpc, code, details) {
    super(rpc, code, `the server does not implement sidecar.v1.IdentityService/${rpc} (older sidecar?): ${details}`);
    this.name = 'UnimplementedError';
  }
}

class DeadlineExceededError extends SidecarError {
  constructor(...a) { super(...a); this.name = 'DeadlineExceededError'; }
}

/** UNAUTHENTICATED or PERMISSION_DENIED. */
class AccessDeniedError extends SidecarError {
  constructor(...a) { super(...a); this.name = 'AccessDeniedError'; }
}

/** RESOURCE_EXHAUSTED: the server is shedding load; not retried automatically. */
class RateLimitedError extends SidecarError {
  constructor(...a) { super(...a); this.name = 'RateLimitedError'; }
}

const ERROR_FOR = {
  [grpc.status.INVALID_ARGUMENT]: InvalidArgumentError,
  [grpc.status.UNAVAILABLE]: UnavailableError,
  [grpc.status.UNIMPLEMENTED]: UnimplementedError,
  [grpc.status.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [grpc.status.UNAUTHENTICATED]: AccessDeniedError,
  [grpc.status.PERMISSION_DENIED]: AccessDeniedError,
  [grpc.status.RESOURCE_EXHAUSTED]: RateLimitedError,
};

function errorFor(rpc, err, attempts) {
  const Cls = ERROR_FOR[err.code] || SidecarError;
  return new Cls(rpc, err.code, err.details || err.message || '', attempts);
}

function readPem(value) {
  if (value == null) return null;
  if (Buffer.isBuffer(value)) return value;
  if (typeof value === 'string' && value.includes('-----BEGIN')) return Buffer.from(value);
  return fs.readFileSync(value);
}

/** `unix:///path/to.sock` or `host:port`, as grpc-js takes them. */
function target(address) {
  const a = String(address).trim();
  if (/^(unix|unix-abstract|dns|ipv4|ipv6):/.test(a)) return a;
  if (a.includes('://') || !/:\d+$/.test(a)) {
    throw new TypeError(`address: expected unix:///path or host:port, got ${JSON.stringify(address)}`);
  }
  return a;
}

function credentials(tls) {
  if (!tls) return grpc.credentials.createInsecure();
  if ((tls.cert == null) !== (tls.key == null)) throw new TypeError('tls: cert and key must be given together (mutual TLS)');
  return grpc.credentials.createSsl(readPem(tls.ca), readPem(tls.key), readPem(tls.cert));
}

function duration(ttl) {
  if (ttl == null) return null;
  if (typeof ttl === 'object') return ttl;
  const seconds = Math.trunc(ttl);
  return { seconds, nanos: Math.round((ttl - seconds) * 1e9) };
}

function toDate(ts) {
  return ts ? new Date(Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6)) : null;
}

const OUTCOME = {
  OUTCOME_NEW_IDENTITY: 'NEW_IDENTITY',
  OUTCOME_SAME_IDENTITY: 'SAME_IDENTITY',
  OUTCOME_SWITCHED_IDENTITY: 'SWITCHED_IDENTITY',
};

const token = (t) => ({ jwt: t.jwt, expiresAt: toDate(t.expires_at), keyId: t.key_id });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A promise-based client; keep one per process. Options: `tls` ({ca, cert, key, serverName}: Buffers,
 * PEM strings or file paths), `timeoutMs` per attempt, `retry` (UNAVAILABLE only), `metadata` sent with
 * every call, `channelOptions` for grpc-js.
 */
class SidecarClient {
  constructor(address = '127.0.0.1:50051', options = {}) {
    const { tls = null, timeoutMs = DEFAULT_TIMEOUT_MS, retry = {}, metadata = {}, channelOptions = {} } = options;
    this.address = address;
    this.timeoutMs = timeoutMs;
    this.retry = { ...DEFAULT_RETRY, ...retry };
    if (!(this.retry.attempts >= 1)) throw new TypeError('retry.attempts: must be at least 1');
    this.metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) this.metadata.set(k, v);
    const opts = { ...CHANNEL_OPTIONS, ...channelOptions };
    if (tls && tls.serverName) opts['grpc.ssl_target_name_override'] = tls.serverName;
    this.stub = new IdentityService(target(address), credentials(tls), opts);
  }

  backoffMs(retry) {
    const { initialBackoffMs, maxBackoffMs, multiplier, jitter } = this.retry;
    const base = Math.min(maxBackoffMs, initialBackoffMs * multiplier ** (retry - 1));
    return base * (1 - jitter + Math.random() * 2 * jitter);
  }

  once(rpc, request, timeoutMs) {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + (timeoutMs || this.timeoutMs));
      this.stub[rpc](request, this.metadata, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
    });
  }

  async call(rpc, request, timeoutMs) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once(rpc, request, timeoutMs);
      } catch (err) {
        if (err.code === grpc.status.UNAVAILABLE && attempt < this.retry.attempts) {
          await sleep(this.backoffMs(attempt));
          continue;
        }
        throw errorFor(rpc, err, attempt);
      }
    }
  }

  /** Run Synerise's identity flow for `email` and sign the token. */
  async resolveIdentity(email, { identityHash = '', cookieUuid = '', cookieHeader = '', ttl = null, timeoutMs } = {}) {
    const r = await this.call('ResolveIdentity', {
      email, identity_hash: identityHash, cookie_uuid: cookieUuid, cookie_header: cookieHeader, ttl: duration(ttl),
    }, timeoutMs);
    return {
      uuid: r.uuid, identityHash: r.identity_hash, outcome: OUTCOME[r.outcome] || 'UNSPECIFIED',
      setIdentity: r.set_identity, token: token(r.token),
    };
  }

  /** Sign a token for an email and UUID the caller already chose. */
  async issueToken(email, uuid, { ttl = null, timeoutMs } = {}) {
    const r = await this.call('IssueToken', { email, uuid, ttl: duration(ttl) }, timeoutMs);
    return token(r.token);
  }

  /** The active public key: PEM, Synerise certificate code, JWK, key id; and the next key, when one is scheduled. */
  async getPublicKey({ timeoutMs } = {}) {
    const r = await this.call('GetPublicKey', {}, timeoutMs);
    const n = r.next_key;
    return {
      pem: r.pem, certificateCode: r.certificate_code, certificateCodeBare: r.certificate_code_bare,
      jwk: r.jwk ? JSON.parse(r.jwk) : {}, keyId: r.key_id, bits: r.bits,
      nextKey: n ? {
        pem: n.pem, certificateCode: n.certificate_code, certificateCodeBare: n.certificate_code_bare,
        keyId: n.key_id, activatesAt: toDate(n.activates_at),
      } : null,
    };
  }

  /** Check a token the way Synerise does. */
  async verifyToken(jwt, { timeoutMs } = {}) {
    const r = await this.call('VerifyToken', { jwt }, timeoutMs);
    return {
      valid: r.valid, reason: r.reason, email: r.email, uuid: r.uuid,
      expiresAt: toDate(r.expires_at), keyId: r.key_id,
    };
  }

  /** Whether Synerise would accept the event under the configured event authentication settings. */
  async evaluateEvent(action, { jwt = '', changesCustomerData = false, timeoutMs } = {}) {
    const r = await this.call('EvaluateEvent', { action, jwt, changes_customer_data: changesCustomerData }, timeoutMs);
    return { accepted: r.accepted, requiresJwt: r.requires_jwt, rule: r.rule, reason: r.reason };
  }

  /** Close the channel. */
  close() {
    this.stub.close();
  }
}

module.exports = {
  SidecarClient, SidecarError, InvalidArgumentError, UnavailableError, UnimplementedError, DeadlineExceededError,
  AccessDeniedError, RateLimitedError, DEFAULT_RETRY, NO_RETRY, DEFAULT_TIMEOUT_MS, PROTO_DIR, PROTO_FILE,
  IdentityService,
};
