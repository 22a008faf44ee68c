// Package sidecar is a small typed client for the Synerise identity and token
// sidecar (sidecar.v1.IdentityService).
//
//	c, err := sidecar.Dial("unix:///run/sidecar/sidecar.sock") // or "127.0.0.1:50051"
//	if err != nil { ... }
//	defer c.Close()
//	who, err := c.ResolveIdentity(ctx, sidecar.ResolveIdentityRequest{Email: email, IdentityHash: hash, CookieHeader: r.Header.Get("Cookie")})
//	// who.Token.JWT -> SR.client.setAccessToken; if who.SetIdentity:
//	// SR.client.setUuidAndIdentityHash(who.IdentityHash, who.UUID)
//
// Every call gets a deadline (the context's, or the client's default of 5 s per
// attempt), is retried with backoff on UNAVAILABLE only (every RPC is safe to
// repeat), and fails with an *Error: errors.Is(err, ErrInvalidArgument) is the
// caller's mistake, with the Field and Rule the server named.
//
// The generated stubs are in the sidecarv1 package beside this one.
package sidecar

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/local"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/synerise-sidecar/synerise-identity-sidecar/clients/go/sidecarv1"
)

// DefaultTimeout is the deadline of each attempt when the context has none sooner.
const DefaultTimeout = 5 * time.Second

// Client calls one sidecar. It is safe for concurrent use; hold one per process.
type Client struct {
	conn     *grpc.ClientConn
	rpc      sidecarv1.IdentityServiceClient
	timeout  time.Duration
	attempts int
	backoff  time.Duration
}

type options struct {
	timeout  time.Duration
	attempts int
	backoff  time.Duration
	creds    credentials.TransportCredentials
	dial     []grpc.DialOption
}

// Option configures Dial.
type Option func(*options)

// WithTimeout sets the deadline of each attempt (default DefaultTimeout); 0
// leaves only the context's.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRetries sets how many times a call is repeated after UNAVAILABLE
// (default 2), waiting backoff, then twice that, and so on, between attempts.
func WithRetries(n int, backoff time.Duration) Option {
	return func(o *options) { o.attempts, o.backoff = n+1, backoff }
}

// WithTLS calls over TLS (or mTLS, with cfg.Certificates), as a sidecar on a
// non-loopback address requires. Without it the client speaks plaintext, which
// it allows only to a Unix socket or a loopback address.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) { o.creds = credentials.NewTLS(cfg) }
}

// WithDialOptions adds gRPC dial options (interceptors, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// Dial returns a client of the sidecar at target: "unix:///path/to.sock"
// (or "unix:/path"), or "host:port". It does not wait for the connection: the
// first call does, within its deadline.
func Dial(target string, opts ...Option) (*Client, error) {
	o := options{timeout: DefaultTimeout, attempts: 3, backoff: 50 * time.Millisecond, creds: local.NewCredentials()}
	for _, opt := range opts {
		opt(&o)
	}
	network, addr := "tcp", target
	if strings.HasPrefix(target, "unix:") {
		network, addr = "unix", strings.TrimPrefix(strings.TrimPrefix(target, "unix:"), "//")
	}
	var d net.Dialer
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(o.creds),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return d.DialContext(ctx, network, a)
		}),
	}
	if network == "unix" {
		dial = append(dial, grpc.WithAuthority("localhost"))
	}
	// passthrough: the address goes to the dialer as written (no DNS for a socket path).
	conn, err := grpc.DialContext(context.Background(), "passthrough:///"+addr, append(dial, o.dial...)...)
	if err != nil {
		return nil, err
	}
	c := New(conn)
	c.conn, c.timeout, c.attempts, c.backoff = conn, o.timeout, o.attempts, o.backoff
	return c, nil
}

// New wraps a connection the caller made and owns (Close does not close it);
// calls get DefaultTimeout and the default retries.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: sidecarv1.NewIdentityServiceClient(conn), timeout: DefaultTimeout, attempts: 3, backoff: 50 * time.Millisecond}
}

// Close closes the connection Dial made.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// call runs one RPC with a deadline per attempt, retrying UNAVAILABLE only.
func call[Req, Resp any](ctx context.Context, c *Client, rpc string, req Req,
	method func(context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	wait := c.backoff
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if c.timeout > 0 {
			actx, cancel = context.WithTimeout(ctx, c.timeout)
		}
		resp, err := method(actx, req)
		expired := actx.Err() == context.DeadlineExceeded
		cancel()
		if err == nil {
			return resp, nil
		}
		e := fromError(rpc, err, attempt)
		if expired && e.Code != codes.DeadlineExceeded {
			// The deadline passed: whatever raced it back (a server's UNKNOWN "context deadline exceeded", a
			// broken stream) the caller's answer is that the call did not finish in time.
			e.Code, e.Message = codes.DeadlineExceeded, "deadline exceeded: "+e.Message
		}
		if !e.retryable() || attempt >= c.attempts {
			return resp, e
		}
		select {
		case <-ctx.Done():
			return resp, e
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// ResolveIdentityRequest is what the backend knows about the browser.
type ResolveIdentityRequest struct {
	// Email is the customer's email, the identifier.
	Email string
	// IdentityHash is SR.client.getIdentityHash() as the browser reported it; "" if none.
	IdentityHash string
	// CookieUUID is the _snrs_uuid cookie's value; "" if none.
	CookieUUID string
	// CookieHeader is the raw Cookie header, read where the fields above are empty.
	CookieHeader string
	// TTL is the token's lifetime; 0 takes the server's default.
	TTL time.Duration
}

// ResolveIdentity runs Synerise's whole identity flow in one round trip.
func (c *Client) ResolveIdentity(ctx context.Context, r ResolveIdentityRequest) (*Identity, error) {
	resp, err := call(ctx, c, "ResolveIdentity", &sidecarv1.ResolveIdentityRequest{
		Email: r.Email, IdentityHash: r.IdentityHash, CookieUuid: r.CookieUUID, CookieHeader: r.CookieHeader, Ttl: ttl(r.TTL),
	}, c.rpc.ResolveIdentity)
	if err != nil {
		return nil, err
	}
	return &Identity{
		UUID: resp.GetUuid(), IdentityHash: resp.GetIdentityHash(), Outcome: outcome(resp.GetOutcome()),
		SetIdentity: resp.GetSetIdentity(), Token: token(resp.GetToken()),
	}, nil
}

// IssueToken signs a token for an email and UUID the caller already chose; ttl 0 takes the server's default.
func (c *Client) IssueToken(ctx context.Context, email, uuid string, lifetime time.Duration) (*Token, error) {
	resp, err := call(ctx, c, "IssueToken", &sidecarv1.IssueTokenRequest{Email: email, Uuid: uuid, Ttl: ttl(lifetime)},
		c.rpc.IssueToken)
	if err != nil {
		return nil, err
	}
	t := token(resp.GetToken())
	return &t, nil
}

// GetPublicKey describes the active signing key.
func (c *Client) GetPublicKey(ctx context.Context) (*PublicKey, error) {
	resp, err := call(ctx, c, "GetPublicKey", &sidecarv1.GetPublicKeyRequest{}, c.rpc.GetPublicKey)
	if err != nil {
		return nil, err
	}
	return &PublicKey{
		PEM: resp.GetPem(), CertificateCode: resp.GetCertificateCode(), CertificateCodeBare: resp.GetCertificateCodeBare(),
		JWK: resp.GetJwk(), KeyID: resp.GetKeyId(), Bits: int(resp.GetBits()),
	}, nil
}

// VerifyToken checks a token the way Synerise does; a bad token is Valid false with a Reason, not an error.
func (c *Client) VerifyToken(ctx context.Context, jwt string) (*Verification, error) {
	resp, err := call(ctx, c, "VerifyToken", &sidecarv1.VerifyTokenRequest{Jwt: jwt}, c.rpc.VerifyToken)
	if err != nil {
		return nil, err
	}
	v := &Verification{Valid: resp.GetValid(), Reason: resp.GetReason(), Email: resp.GetEmail(), UUID: resp.GetUuid(), KeyID: resp.GetKeyId()}
	if resp.GetExpiresAt() != nil {
		v.ExpiresAt = resp.GetExpiresAt().AsTime()
	}
	return v, nil
}

// EvaluateEventRequest is an event to judge under the configured event authentication.
type EvaluateEventRequest struct {
	// Action is the event's action, e.g. "page.visit".
	Action string
	// JWT is the token the event would carry; "" if none.
	JWT string
	// ChangesCustomerData says whether the event changes the customer's data.
	ChangesCustomerData bool
}

// EvaluateEvent tells whether an event would be accepted.
func (c *Client) EvaluateEvent(ctx context.Context, r EvaluateEventRequest) (*EventDecision, error) {
	resp, err := call(ctx, c, "EvaluateEvent", &sidecarv1.EvaluateEventRequest{
		Action: r.Action, Jwt: r.JWT, ChangesCustomerData: r.ChangesCustomerData,
	}, c.rpc.EvaluateEvent)
	if err != nil {
		return nil, err
	}
	return &EventDecision{Accepted: resp.GetAccepted(), RequiresJWT: resp.GetRequiresJwt(), Rule: resp.GetRule(), Reason: resp.GetReason()}, nil
}

func ttl(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d) // a negative one too: the server names the rule it breaks
}
