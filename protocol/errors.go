package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors, one per Code. A *CodeError matches its code's sentinel with errors.Is.
var (
	ErrBusy        = errors.New("no free slot")
	ErrLimits      = errors.New("limits above policy")
	ErrArch        = errors.New("wrong architecture")
	ErrBadRequest  = errors.New("bad request")
	ErrNotFound    = errors.New("not found")
	ErrTooLarge    = errors.New("too large")
	ErrFetchFailed = errors.New("binary or input fetch failed")
	ErrInternal    = errors.New("internal error")
	ErrCancelled   = errors.New("cancelled")
	ErrRejected    = errors.New("binary rejected")
	ErrUnknownCode = errors.New("unknown error code")

	// ErrBadEnvelope is returned for an offer or receipt whose signature, signer or
	// contents do not check out.
	ErrBadEnvelope = errors.New("bad signed envelope")
)

// codeErrs maps codes to sentinels, in code order so that CodeOf is deterministic.
var codeErrs = []struct {
	code Code
	err  error
}{
	{Code_BUSY, ErrBusy},
	{Code_LIMITS, ErrLimits},
	{Code_ARCH, ErrArch},
	{Code_BAD_REQUEST, ErrBadRequest},
	{Code_NOT_FOUND, ErrNotFound},
	{Code_TOO_LARGE, ErrTooLarge},
	{Code_FETCH_FAILED, ErrFetchFailed},
	{Code_INTERNAL, ErrInternal},
	{Code_CANCELLED, ErrCancelled},
	{Code_REJECTED, ErrRejected},
}

// CodeError is an error that crosses the wire: a code and a human message.
type CodeError struct {
	Code Code
	Msg  string
}

// Errorf returns a *CodeError with a formatted message.
func Errorf(c Code, format string, args ...any) *CodeError {
	return &CodeError{Code: c, Msg: fmt.Sprintf(format, args...)}
}

func (e *CodeError) Error() string {
	if e.Msg == "" {
		return e.sentinel().Error()
	}
	return e.sentinel().Error() + ": " + e.Msg
}

// Unwrap returns the code's sentinel, so errors.Is(err, ErrBusy) works.
func (e *CodeError) Unwrap() error { return e.sentinel() }

func (e *CodeError) sentinel() error {
	for _, ce := range codeErrs {
		if ce.code == e.Code {
			return ce.err
		}
	}
	return fmt.Errorf("%w %d", ErrUnknownCode, int32(e.Code))
}

// FromCode returns nil for OK and a *CodeError otherwise; used on received codes.
func FromCode(c Code, msg string) error {
	if c == Code_OK {
		return nil
	}
	return &CodeError{Code: c, Msg: Clean(msg, MaxReason)}
}

// CodeOf returns the code to send for err: OK for nil, the code of a *CodeError or of a
// wrapped sentinel, else INTERNAL.
func CodeOf(err error) Code {
	if err == nil {
		return Code_OK
	}
	var ce *CodeError
	if errors.As(err, &ce) {
		return ce.Code
	}
	for _, ce := range codeErrs {
		if errors.Is(err, ce.err) {
			return ce.code
		}
	}
	return Code_INTERNAL
}

// Refusal returns the code and the cleaned message to send for a non-nil err. The
// receiver's CodeError says the code's own words ("binary rejected: ...") again, so they
// are left out of the message.
//
// An INTERNAL error's text stays on this side (its log): it is about the host, not the
// request (file paths, store errors), and any stranger may send a request.
func Refusal(err error) (Code, string) {
	if CodeOf(err) == Code_INTERNAL {
		return Code_INTERNAL, "the peer failed for its own reasons (its log says why)"
	}
	msg := err.Error()
	var ce *CodeError
	if errors.As(err, &ce) && ce.Msg != "" {
		msg = strings.Replace(msg, ce.sentinel().Error()+": ", "", 1)
	}
	return CodeOf(err), Clean(msg, MaxReason)
}
