package sidecar

import (
	"time"

	"github.com/synerise-sidecar/synerise-identity-sidecar/clients/go/sidecarv1"
)

// Outcome is the branch of Synerise's identity flow the sidecar took.
type Outcome string

const (
	// OutcomeUnspecified is never returned by a sidecar.
	OutcomeUnspecified Outcome = "unspecified"
	// OutcomeNewIdentity: the browser had no identity hash; the token carries the _snrs_uuid cookie's UUID.
	OutcomeNewIdentity Outcome = "new_identity"
	// OutcomeSameIdentity: the browser's hash is hash(email); nothing to set in the browser.
	OutcomeSameIdentity Outcome = "same_identity"
	// OutcomeSwitchedIdentity: the browser's hash is someone else's; the token carries a new UUIDv5 of the email.
	OutcomeSwitchedIdentity Outcome = "switched_identity"
)

func outcome(o sidecarv1.Outcome) Outcome {
	switch o {
	case sidecarv1.Outcome_OUTCOME_NEW_IDENTITY:
		return OutcomeNewIdentity
	case sidecarv1.Outcome_OUTCOME_SAME_IDENTITY:
		return OutcomeSameIdentity
	case sidecarv1.Outcome_OUTCOME_SWITCHED_IDENTITY:
		return OutcomeSwitchedIdentity
	}
	return OutcomeUnspecified
}

// Token is a signed Synerise JWT.
type Token struct {
	// JWT is the compact JWS, for SR.client.setAccessToken or the _snrs_token cookie.
	JWT string
	// ExpiresAt is its exp claim.
	ExpiresAt time.Time
	// KeyID is the RFC 7638 thumbprint of the key that verifies it.
	KeyID string
}

func token(t *sidecarv1.Token) Token {
	out := Token{JWT: t.GetJwt(), KeyID: t.GetKeyId()}
	if t.GetExpiresAt() != nil {
		out.ExpiresAt = t.GetExpiresAt().AsTime()
	}
	return out
}

// Identity is what ResolveIdentity decided: everything the frontend needs.
type Identity struct {
	// UUID is the UUID the token carries.
	UUID string
	// IdentityHash is hash(email), as SR.client.hashIdentity(email) computes it.
	IdentityHash string
	Outcome      Outcome
	// SetIdentity says whether the frontend must call SR.client.setUuidAndIdentityHash(IdentityHash, UUID).
	SetIdentity bool
	Token       Token
}

// PublicKey is the active signing key in every form Synerise and JOSE tools accept.
type PublicKey struct {
	// PEM is the SubjectPublicKeyInfo PEM, as `openssl rsa -pubout` writes it.
	PEM string
	// CertificateCode is Synerise's "Certificate code": one line, header and footer kept.
	CertificateCode string
	// CertificateCodeBare is the same without header and footer.
	CertificateCodeBare string
	// JWK is the public JWK as JSON text.
	JWK string
	// KeyID is the RFC 7638 thumbprint.
	KeyID string
	// Bits is the modulus length.
	Bits int
}

// Verification is VerifyToken's verdict.
type Verification struct {
	// Valid says whether Synerise would accept the token.
	Valid bool
	// Reason says why not, from a fixed set; "" when valid.
	Reason string
	// Email, UUID, ExpiresAt and KeyID are the token's, when valid.
	Email     string
	UUID      string
	ExpiresAt time.Time
	KeyID     string
}

// EventDecision is EvaluateEvent's answer.
type EventDecision struct {
	// Accepted says whether Synerise would accept the event as sent.
	Accepted bool
	// RequiresJWT says whether the event needs a valid JWT to be accepted.
	RequiresJWT bool
	// Rule names the rule that decided.
	Rule string
	// Reason explains it.
	Reason string
}
