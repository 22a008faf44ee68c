// Type declarations for @synerise-sidecar/client (index.js, the CommonJS entry point; index.d.mts re-exports them).
import type { ChannelOptions, ServiceClientConstructor } from '@grpc/grpc-js';

/** PEM bytes, PEM text, or a path to a PEM file. */
export type Pem = Buffer | string;

export interface TlsOptions {
  /** CA bundle that signed the server's certificate; system roots when absent. */
  ca?: Pem;
  /** Client certificate chain (mutual TLS); give `key` too. */
  cert?: Pem;
  /** Client private key (mutual TLS); give `cert` too. */
  key?: Pem;
  /** Name to check the server's certificate against, when it differs from the address. */
  serverName?: string;
}

/** Retries on UNAVAILABLE only, with exponential backoff and jitter. */
export interface RetryOptions {
  /** Total attempts, the first included; 1 disables retrying. Default 4. */
  attempts?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  multiplier?: number;
  /** Each pause is scaled by a random factor in [1 - jitter, 1 + jitter]. */
  jitter?: number;
}

export interface ClientOptions {
  tls?: TlsOptions | null;
  /** Deadline of one attempt in milliseconds. Default 5000. */
  timeoutMs?: number;
  retry?: RetryOptions;
  /** Sent with every call, e.g. an access token. */
  metadata?: Record<string, string>;
  channelOptions?: ChannelOptions;
}

export interface CallOptions {
  /** This call's per-attempt deadline in milliseconds. */
  timeoutMs?: number;
}

/** Token lifetime: seconds, or a protobuf Duration. Must be > 0 and < 7 days; the server default when absent. */
export type Ttl = number | { seconds: number; nanos?: number } | null;

export type Outcome = 'NEW_IDENTITY' | 'SAME_IDENTITY' | 'SWITCHED_IDENTITY' | 'UNSPECIFIED';

export interface Token {
  /** The compact JWS, for SR.client.setAccessToken or the _snrs_token cookie. */
  jwt: string;
  /** Its exp claim. */
  expiresAt: Date;
  /** RFC 7638 thumbprint of the key that verifies it. */
  keyId: string;
}

export interface Identity {
  /** The UUID the token carries. */
  uuid: string;
  /** hash(email), as SR.client.hashIdentity(email) computes it. */
  identityHash: string;
  outcome: Outcome;
  /** Whether the frontend must call SR.client.setUuidAndIdentityHash(identityHash, uuid). */
  setIdentity: boolean;
  token: Token;
}

export interface PublicKey {
  pem: string;
  /** Synerise's one-line "Certificate code", header and footer kept. */
  certificateCode: string;
  certificateCodeBare: string;
  /** The public JWK (kty, n, e, kid, alg, use). */
  jwk: Record<string, string>;
  keyId: string;
  bits: number;
  /** The key scheduled to sign from `activatesAt` (a scheduled cut-over); null when none is. */
  nextKey: NextKey | null;
}

export interface NextKey {
  pem: string;
  /** Paste this into Synerise at `activatesAt`. */
  certificateCode: string;
  certificateCodeBare: string;
  keyId: string;
  activatesAt: Date;
}

export interface Verification {
  valid: boolean;
  /** Why not, from the server's fixed set; empty when valid. */
  reason: string;
  email: string;
  uuid: string;
  expiresAt: Date | null;
  keyId: string;
}

export interface EventDecision {
  accepted: boolean;
  requiresJwt: boolean;
  rule: string;
  reason: string;
}

export interface ResolveIdentityOptions extends CallOptions {
  /** SR.client.getIdentityHash() from the browser; empty if none. */
  identityHash?: string;
  /** The _snrs_uuid cookie. */
  cookieUuid?: string;
  /** Or the raw Cookie header; _snrs_uuid and _snrs_p's identityHash are read from it. */
  cookieHeader?: string;
  ttl?: Ttl;
}

export class SidecarClient {
  /** `address` is `unix:///path/to.sock` or `host:port` (default 127.0.0.1:50051). */
  constructor(address?: string, options?: ClientOptions);
  readonly address: string;
  resolveIdentity(email: string, options?: ResolveIdentityOptions): Promise<Identity>;
  issueToken(email: string, uuid: string, options?: CallOptions & { ttl?: Ttl }): Promise<Token>;
  getPublicKey(options?: CallOptions): Promise<PublicKey>;
  verifyToken(jwt: string, options?: CallOptions): Promise<Verification>;
  evaluateEvent(action: string, options?: CallOptions & { jwt?: string; changesCustomerData?: boolean }): Promise<EventDecision>;
  close(): void;
}

/** A failed call. `code` is the numeric gRPC status, `codeName` its name. */
export class SidecarError extends Error {
  readonly rpc: string;
  readonly code: number;
  readonly codeName: string;
  readonly details: string;
}
/** INVALID_ARGUMENT: `field` and `rule` parsed from the server's `field: rule` message. */
export class InvalidArgumentError extends SidecarError {
  readonly field: string;
  readonly rule: string;
}
/** UNAVAILABLE after every retry. */
export class UnavailableError extends SidecarError {
  readonly attempts: number;
}
export class UnimplementedError extends SidecarError {}
export class DeadlineExceededError extends SidecarError {}
export class AccessDeniedError extends SidecarError {}
export class RateLimitedError extends SidecarError {}

export const DEFAULT_RETRY: Readonly<Required<RetryOptions>>;
export const NO_RETRY: Readonly<Required<RetryOptions>>;
export const DEFAULT_TIMEOUT_MS: number;
/** Folder with the shipped copy of proto/sidecar/v1/identity.proto. */
export const PROTO_DIR: string;
export const PROTO_FILE: string;
/** The grpc-js service client constructor, for callers who want the raw stub. */
export const IdentityService: ServiceClientConstructor;
