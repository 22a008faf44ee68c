// Command peer is the Go service a team would write instead of the sidecar, for bench/run.py to
// measure beside it.
//
// sidecar.v1.IdentityService/IssueToken with the stubs committed in clients/go/sidecarv1, served
// by grpc-go; the token is golang-jwt's RS256 with the sidecar's header and claims: header
// {"alg":"RS256","typ":"JWT"}, payload exactly {"exp","uuid","email"} (no iat), exp = now + ttl
// rounded down (default 24 h). The PEM is parsed once at start; the response carries expires_at
// and the key's RFC 7638 thumbprint as key_id, computed once. Bad input gets INVALID_ARGUMENT
// naming the field.
//
//	peer KEY_FILE [HOST:PORT]     (default 127.0.0.1:0)
//
// Prints "listening HOST:PORT" on stdout once bound; SIGTERM or SIGINT stops it. Built offline in
// GOPATH mode by build.sh.
package main

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt"
	sidecarv1 "github.com/synerise-sidecar/synerise-identity-sidecar/clients/go/sidecarv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	defaultTTL = 24 * time.Hour
	maxTTL     = 7 * 24 * time.Hour
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// claims are the sidecar's payload, in its order: exp, uuid, email.
type claims struct {
	Exp   int64  `json:"exp"`
	UUID  string `json:"uuid"`
	Email string `json:"email"`
}

// Valid is golang-jwt's hook for parsed tokens; this service only signs.
func (claims) Valid() error { return nil }

type server struct {
	sidecarv1.UnimplementedIdentityServiceServer
	key   *rsa.PrivateKey
	keyID string
}

func invalid(field, rule string) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, rule)
}

func checkEmail(email string) error {
	switch {
	case email == "":
		return invalid("email", "is required")
	case len(email) > 254:
		return invalid("email", "must be at most 254 characters")
	case strings.ContainsAny(email, " \t\r\n\v\f\x00\x7f"):
		return invalid("email", "must not contain whitespace or control characters")
	}
	at := strings.IndexByte(email, '@')
	if at <= 0 || at == len(email)-1 || strings.IndexByte(email[at+1:], '@') >= 0 {
		return invalid("email", "must contain exactly one '@' with a non-empty part on each side")
	}
	return nil
}

func (s *server) IssueToken(_ context.Context, req *sidecarv1.IssueTokenRequest) (*sidecarv1.IssueTokenResponse, error) {
	if err := checkEmail(req.GetEmail()); err != nil {
		return nil, err
	}
	if !uuidRE.MatchString(req.GetUuid()) {
		return nil, invalid("uuid", "must be a canonical UUID (8-4-4-4-12 hex digits)")
	}
	ttl := defaultTTL
	if d := req.GetTtl(); d != nil {
		ttl = d.AsDuration()
		if ttl < time.Second || ttl >= maxTTL {
			return nil, invalid("ttl", "must be between 1 second and 7 days")
		}
	}
	now := time.Now()
	exp := now.Add(ttl).Unix()
	c := claims{Exp: exp, UUID: strings.ToLower(req.GetUuid()), Email: req.GetEmail()}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodRS256, c).SignedString(s.key)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing: %v", err)
	}
	return &sidecarv1.IssueTokenResponse{Token: &sidecarv1.Token{
		Jwt: signed, ExpiresAt: &timestamppb.Timestamp{Seconds: exp}, KeyId: s.keyID,
	}}, nil
}

// thumbprint is the RFC 7638 JWK thumbprint: required members, sorted, no whitespace, SHA-256.
func thumbprint(pub *rsa.PublicKey) string {
	b64 := base64.RawURLEncoding.EncodeToString
	e := big.NewInt(int64(pub.E)).Bytes()
	canonical := fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, b64(e), b64(pub.N.Bytes()))
	sum := sha256.Sum256([]byte(canonical))
	return b64(sum[:])
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: peer KEY_FILE [HOST:PORT]")
		os.Exit(2)
	}
	listen := "127.0.0.1:0"
	if len(os.Args) == 3 {
		listen = os.Args[2]
	}
	pem, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(pem)
	if err != nil {
		fmt.Fprintf(os.Stderr, "key file %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot listen on %s: %v\n", listen, err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	sidecarv1.RegisterIdentityServiceServer(srv, &server{key: key, keyID: thumbprint(&key.PublicKey)})
	fmt.Printf("listening %s\n", lis.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		srv.GracefulStop()
	}()
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
