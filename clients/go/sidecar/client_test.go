package sidecar_test

// The client against a real `sidecar serve` on 127.0.0.1 and on a Unix socket
// (started by scripts/test.d/70-go.sh, which passes SC_TEST_*), and gRPC
// servers of the generated stubs standing in for an older or a slow sidecar.
// Tokens are checked with crypto/rsa against the openssl-made public key; the
// identity hash and the UUIDv5 are computed here, as Synerise's guide says.

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synerise-sidecar/synerise-identity-sidecar/clients/go/sidecar"
	"github.com/synerise-sidecar/synerise-identity-sidecar/clients/go/sidecarv1"
)

const (
	email  = "customer@synerise.com"
	cookie = "0f8fad5b-d9cb-469f-a165-70867728950e"
)

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run scripts/test.d/70-go.sh, which starts the sidecar", name)
	}
	return v
}

func transports(t *testing.T) map[string]string {
	return map[string]string{"tcp": env(t, "SC_TEST_TCP"), "unix": env(t, "SC_TEST_UNIX")}
}

func dial(t *testing.T, target string, opts ...sidecar.Option) *sidecar.Client {
	t.Helper()
	c, err := sidecar.Dial(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// javaHash is Java's String.hashCode over UTF-16, as SR.client.hashIdentity computes it.
func javaHash(s string) string {
	var h int32
	for _, r := range s {
		if r >= 0x10000 {
			r -= 0x10000
			h = 31*h + int32(0xD800+(r>>10))
			h = 31*h + int32(0xDC00+(r&0x3FF))
			continue
		}
		h = 31*h + int32(r)
	}
	return strconv.Itoa(int(h))
}

// uuid5 is RFC 4122's name-based UUID in the URL namespace.
func uuid5(name string) string {
	ns := []byte{0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}
	sum := sha1.Sum(append(ns, name...))
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

type claims struct {
	Exp   int64  `json:"exp"`
	UUID  string `json:"uuid"`
	Email string `json:"email"`
}

// verifyRS256 checks a compact JWS with the openssl-made public key and returns its claims.
func verifyRS256(t *testing.T, jwt string) claims {
	t.Helper()
	raw, err := os.ReadFile(env(t, "SC_TEST_PUBLIC_PEM"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", jwt)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	var header map[string]string
	decode(t, parts[0], &header)
	if header["alg"] != "RS256" || header["typ"] != "JWT" {
		t.Fatalf("header %v", header)
	}
	var c claims
	decode(t, parts[1], &c)
	return c
}

func decode(t *testing.T, part string, into any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

func TestResolveIdentityThreeBranches(t *testing.T) {
	salt := env(t, "SC_TEST_SALT")
	for name, target := range transports(t) {
		t.Run(name, func(t *testing.T) {
			c := dial(t, target)
			ctx := context.Background()
			derived := uuid5(salt + email)
			cases := []struct {
				req     sidecar.ResolveIdentityRequest
				outcome sidecar.Outcome
				uuid    string
				set     bool
			}{
				{sidecar.ResolveIdentityRequest{Email: email, CookieUUID: cookie}, sidecar.OutcomeNewIdentity, cookie, true},
				{sidecar.ResolveIdentityRequest{Email: email, IdentityHash: javaHash(email), CookieUUID: cookie}, sidecar.OutcomeSameIdentity, cookie, false},
				{sidecar.ResolveIdentityRequest{Email: email, IdentityHash: "42", CookieHeader: "a=1; _snrs_uuid=" + cookie}, sidecar.OutcomeSwitchedIdentity, derived, true},
			}
			for _, tc := range cases {
				who, err := c.ResolveIdentity(ctx, tc.req)
				if err != nil {
					t.Fatal(err)
				}
				if who.Outcome != tc.outcome || who.UUID != tc.uuid || who.SetIdentity != tc.set || who.IdentityHash != javaHash(email) {
					t.Fatalf("%+v: got %+v", tc.req, who)
				}
				cl := verifyRS256(t, who.Token.JWT)
				if cl != (claims{Exp: who.Token.ExpiresAt.Unix(), UUID: tc.uuid, Email: email}) {
					t.Fatalf("claims %+v, token %+v", cl, who.Token)
				}
				if left := time.Until(who.Token.ExpiresAt); left < 23*time.Hour || left > 24*time.Hour+time.Minute {
					t.Fatalf("default lifetime: %v left", left)
				}
			}
		})
	}
}

func TestIssueGetKeyVerifyEvaluate(t *testing.T) {
	for name, target := range transports(t) {
		t.Run(name, func(t *testing.T) {
			c := dial(t, target)
			ctx := context.Background()
			tok, err := c.IssueToken(ctx, "josé@example.com", cookie, 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if cl := verifyRS256(t, tok.JWT); cl.Email != "josé@example.com" || cl.UUID != cookie || cl.Exp != tok.ExpiresAt.Unix() {
				t.Fatalf("claims %+v", cl)
			}
			if left := time.Until(tok.ExpiresAt); left < 9*time.Minute || left > 10*time.Minute+time.Second {
				t.Fatalf("ttl not honoured: %v left", left)
			}

			key, err := c.GetPublicKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(env(t, "SC_TEST_PUBLIC_PEM"))
			lines := strings.Split(strings.TrimSpace(string(want)), "\n")
			if key.PEM != string(want) || key.CertificateCode != strings.Join(lines, "") ||
				key.CertificateCodeBare != strings.Join(lines[1:len(lines)-1], "") || key.Bits != 2048 || key.KeyID != tok.KeyID {
				t.Fatalf("public key %+v", key)
			}
			var jwk map[string]string
			if err := json.Unmarshal([]byte(key.JWK), &jwk); err != nil || jwk["kid"] != key.KeyID || jwk["alg"] != "RS256" {
				t.Fatalf("jwk %s: %v", key.JWK, err)
			}

			v, err := c.VerifyToken(ctx, tok.JWT)
			if err != nil {
				t.Fatal(err)
			}
			if !v.Valid || v.Email != "josé@example.com" || v.UUID != cookie || !v.ExpiresAt.Equal(tok.ExpiresAt) || v.KeyID != tok.KeyID {
				t.Fatalf("verify %+v", v)
			}
			bad, err := c.VerifyToken(ctx, tok.JWT[:len(tok.JWT)-4]+"AAAA")
			if err != nil || bad.Valid || bad.Reason == "" {
				t.Fatalf("a tampered token: %+v, %v", bad, err)
			}

			d, err := c.EvaluateEvent(ctx, sidecar.EvaluateEventRequest{Action: "form.submit", ChangesCustomerData: true})
			if err != nil || d.Accepted || !d.RequiresJWT || d.Rule == "" {
				t.Fatalf("event without a token: %+v, %v", d, err)
			}
			d, err = c.EvaluateEvent(ctx, sidecar.EvaluateEventRequest{Action: "form.submit", JWT: tok.JWT, ChangesCustomerData: true})
			if err != nil || !d.Accepted {
				t.Fatalf("event with a valid token: %+v, %v", d, err)
			}
		})
	}
}

func TestInvalidArgumentNamesFieldAndRuleNotRetried(t *testing.T) {
	for name, target := range transports(t) {
		t.Run(name, func(t *testing.T) {
			c := dial(t, target, sidecar.WithRetries(4, time.Millisecond))
			ctx := context.Background()
			cases := []struct {
				call  func() error
				field string
				rule  string
			}{
				{func() error {
					_, err := c.ResolveIdentity(ctx, sidecar.ResolveIdentityRequest{Email: "nope"})
					return err
				}, "email", "must contain exactly one '@'"},
				{func() error {
					_, err := c.ResolveIdentity(ctx, sidecar.ResolveIdentityRequest{Email: email, CookieUUID: "zzz"})
					return err
				}, "cookie_uuid", "must be a canonical UUID"},
				{func() error { _, err := c.IssueToken(ctx, email, "", 0); return err }, "uuid", "is required"},
				{func() error { _, err := c.IssueToken(ctx, email, cookie, 8*24*time.Hour); return err }, "ttl", "must be less than 7 days"},
				{func() error { _, err := c.IssueToken(ctx, email, cookie, -5*time.Second); return err }, "ttl", "must be positive"},
			}
			for _, tc := range cases {
				err := tc.call()
				var e *sidecar.Error
				if !errors.As(err, &e) || !errors.Is(err, sidecar.ErrInvalidArgument) || errors.Is(err, sidecar.ErrUnavailable) {
					t.Fatalf("%s: %v", tc.field, err)
				}
				if e.Field != tc.field || !strings.HasPrefix(e.Rule, tc.rule) || e.Attempts != 1 || status.Code(err) != codes.InvalidArgument {
					t.Fatalf("%s: %+v", tc.field, e)
				}
			}
		})
	}
}

func TestUnreachableIsUnavailableAfterRetries(t *testing.T) {
	c := dial(t, "unix://"+filepath.Join(t.TempDir(), "none.sock"), sidecar.WithRetries(2, 5*time.Millisecond), sidecar.WithTimeout(time.Second))
	_, err := c.GetPublicKey(context.Background())
	var e *sidecar.Error
	if !errors.As(err, &e) || !errors.Is(err, sidecar.ErrUnavailable) || e.Attempts != 3 || e.RPC != "GetPublicKey" {
		t.Fatalf("%#v", err)
	}
}

// standIn serves the generated stubs with srv on a Unix socket.
func standIn(t *testing.T, srv sidecarv1.IdentityServiceServer) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "standin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	sidecarv1.RegisterIdentityServiceServer(s, srv)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return "unix://" + sock
}

type older struct {
	sidecarv1.UnimplementedIdentityServiceServer
}

func TestOlderServerIsUnimplemented(t *testing.T) {
	c := dial(t, standIn(t, older{}))
	_, err := c.VerifyToken(context.Background(), "a.b.c")
	var e *sidecar.Error
	if !errors.As(err, &e) || !errors.Is(err, sidecar.ErrUnimplemented) || !strings.Contains(e.Message, "older sidecar") || e.Attempts != 1 {
		t.Fatalf("%v", err)
	}
}

// slow answers GetPublicKey only when the test ends: the client's deadline must end the call.
type slow struct {
	sidecarv1.UnimplementedIdentityServiceServer
	done chan struct{}
}

func (s slow) GetPublicKey(context.Context, *sidecarv1.GetPublicKeyRequest) (*sidecarv1.GetPublicKeyResponse, error) {
	<-s.done
	return &sidecarv1.GetPublicKeyResponse{}, nil
}

func TestDeadlines(t *testing.T) {
	done := make(chan struct{})
	target := standIn(t, slow{done: done})
	t.Cleanup(func() { close(done) }) // runs before the stand-in's Stop, which waits for its handlers
	c := dial(t, target, sidecar.WithTimeout(200*time.Millisecond))
	start := time.Now()
	_, err := c.GetPublicKey(context.Background())
	if !errors.Is(err, sidecar.ErrDeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("client timeout: %v after %v", err, time.Since(start))
	}
	// The caller's context deadline wins when it is sooner than the client's timeout.
	c = dial(t, target, sidecar.WithTimeout(time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := c.GetPublicKey(ctx); !errors.Is(err, sidecar.ErrDeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("context deadline: %v after %v", err, time.Since(start))
	}
}

// failing answers GetPublicKey with code, counting the calls it got.
type failing struct {
	sidecarv1.UnimplementedIdentityServiceServer
	code  codes.Code
	calls chan struct{}
}

func (f failing) GetPublicKey(context.Context, *sidecarv1.GetPublicKeyRequest) (*sidecarv1.GetPublicKeyResponse, error) {
	f.calls <- struct{}{}
	return nil, status.Error(f.code, "refused here")
}

func TestStatusKindsAndWhichAreRetried(t *testing.T) {
	cases := []struct {
		code  codes.Code
		kind  error
		calls int
	}{
		{codes.PermissionDenied, sidecar.ErrAccessDenied, 1},
		{codes.Unauthenticated, sidecar.ErrAccessDenied, 1},
		{codes.ResourceExhausted, sidecar.ErrRateLimited, 1},
		{codes.Unavailable, sidecar.ErrUnavailable, 3},
		{codes.Internal, nil, 1},
	}
	kinds := []error{sidecar.ErrInvalidArgument, sidecar.ErrUnavailable, sidecar.ErrDeadlineExceeded,
		sidecar.ErrUnimplemented, sidecar.ErrAccessDenied, sidecar.ErrRateLimited}
	for _, tc := range cases {
		srv := failing{code: tc.code, calls: make(chan struct{}, 10)}
		c := dial(t, standIn(t, srv), sidecar.WithRetries(2, time.Millisecond))
		_, err := c.GetPublicKey(context.Background())
		var e *sidecar.Error
		if !errors.As(err, &e) || e.Code != tc.code || e.Message != "refused here" || e.Attempts != tc.calls || len(srv.calls) != tc.calls {
			t.Fatalf("%v: %#v after %d calls", tc.code, err, len(srv.calls))
		}
		for _, k := range kinds {
			if errors.Is(err, k) != (k == tc.kind) {
				t.Fatalf("%v: errors.Is(err, %v) = %v", tc.code, k, !(k == tc.kind))
			}
		}
	}
}

func tlsConfig(t *testing.T, withClientCert bool, serverName string) *tls.Config {
	t.Helper()
	dir := env(t, "SC_TEST_TLS_DIR")
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatal("no CA certificate")
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if withClientCert {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func TestMutualTLS(t *testing.T) {
	target := env(t, "SC_TEST_TLS")
	ctx := context.Background()
	c := dial(t, target, sidecar.WithTLS(tlsConfig(t, true, "sidecar.test")))
	who, err := c.ResolveIdentity(ctx, sidecar.ResolveIdentityRequest{Email: email, CookieUUID: cookie})
	if err != nil || who.UUID != cookie || verifyRS256(t, who.Token.JWT).UUID != cookie {
		t.Fatalf("over mTLS: %+v, %v", who, err)
	}
	refused := map[string]*sidecar.Client{
		"no client certificate": dial(t, target, sidecar.WithTLS(tlsConfig(t, false, "sidecar.test")), sidecar.WithRetries(0, 0)),
		"wrong server name":     dial(t, target, sidecar.WithTLS(tlsConfig(t, true, "other.test")), sidecar.WithRetries(0, 0)),
		"plaintext":             dial(t, target, sidecar.WithRetries(0, 0), sidecar.WithTimeout(2*time.Second)),
	}
	for name, c := range refused {
		if _, err := c.GetPublicKey(ctx); err == nil {
			t.Fatalf("%s: the call went through", name)
		} else if !errors.Is(err, sidecar.ErrUnavailable) && !errors.Is(err, sidecar.ErrDeadlineExceeded) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}
