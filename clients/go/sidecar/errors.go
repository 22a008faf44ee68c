package sidecar

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The kinds of failure a caller handles differently; test with errors.Is.
var (
	// ErrInvalidArgument: the request broke an input rule (Error.Field, Error.Rule); the server signed nothing.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnavailable: the sidecar could not be reached (or had no usable key) after every retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrDeadlineExceeded: the call did not finish within its deadline.
	ErrDeadlineExceeded = errors.New("deadline exceeded")
	// ErrUnimplemented: the server is an older sidecar without this RPC.
	ErrUnimplemented = errors.New("unimplemented")
	// ErrAccessDenied: the server refused the caller (UNAUTHENTICATED or PERMISSION_DENIED).
	ErrAccessDenied = errors.New("access denied")
	// ErrRateLimited: the server is shedding load (RESOURCE_EXHAUSTED); not retried.
	ErrRateLimited = errors.New("rate limited")
)

// Error is every failed call's error.
type Error struct {
	// RPC is the method that failed, e.g. "ResolveIdentity".
	RPC string
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the server's (or the channel's) message.
	Message string
	// Field and Rule are what an INVALID_ARGUMENT message names ("email: must contain exactly one '@'").
	Field, Rule string
	// Attempts is how many attempts were made.
	Attempts int
}

func (e *Error) Error() string { return fmt.Sprintf("sidecar %s: %s: %s", e.RPC, e.Code, e.Message) }

// Is matches the kind of the error's code: errors.Is(err, ErrInvalidArgument).
func (e *Error) Is(target error) bool { return kind(e.Code) == target && target != nil }

// GRPCStatus lets status.FromError and status.Code read the error.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

func (e *Error) retryable() bool { return e.Code == codes.Unavailable }

func kind(c codes.Code) error {
	switch c {
	case codes.InvalidArgument:
		return ErrInvalidArgument
	case codes.Unavailable:
		return ErrUnavailable
	case codes.DeadlineExceeded:
		return ErrDeadlineExceeded
	case codes.Unimplemented:
		return ErrUnimplemented
	case codes.Unauthenticated, codes.PermissionDenied:
		return ErrAccessDenied
	case codes.ResourceExhausted:
		return ErrRateLimited
	}
	return nil
}

func fromError(rpc string, err error, attempts int) *Error {
	var code codes.Code
	var msg string
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = codes.DeadlineExceeded, err.Error()
	case errors.Is(err, context.Canceled):
		code, msg = codes.Canceled, err.Error()
	default:
		s := status.Convert(err)
		code, msg = s.Code(), s.Message()
	}
	e := &Error{RPC: rpc, Code: code, Message: msg, Attempts: attempts}
	if code == codes.InvalidArgument {
		if f, r, ok := strings.Cut(msg, ": "); ok {
			e.Field, e.Rule = f, r
		} else {
			e.Rule = msg
		}
	}
	if code == codes.Unimplemented {
		e.Message = fmt.Sprintf("the server does not implement sidecar.v1.IdentityService/%s (older sidecar?): %s", rpc, msg)
	}
	return e
}
