// The ES module entry point (package.json "exports" → "import"): the CommonJS
// module's exports by name, so that `import` and `require` share one copy of the
// client, its error classes (instanceof works across both) and its channels.
import client from './index.js';

export const {
  SidecarClient, SidecarError, InvalidArgumentError, UnavailableError, UnimplementedError, DeadlineExceededError,
  AccessDeniedError, RateLimitedError, DEFAULT_RETRY, NO_RETRY, DEFAULT_TIMEOUT_MS, PROTO_DIR, PROTO_FILE,
  IdentityService,
} = client;
export default client;
