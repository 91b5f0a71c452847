package store

import (
	"errors"

	"github.com/gridnode/gridnode/protocol"
)

var (
	// ErrNotFound is returned for a blob the store does not hold; it is the protocol's
	// NOT_FOUND sentinel, so it crosses the wire with that code.
	ErrNotFound = protocol.ErrNotFound

	// ErrTooLarge is returned for a blob above its size cap (the protocol's TOO_LARGE).
	ErrTooLarge = protocol.ErrTooLarge

	// ErrFull is returned for a blob that does not fit in the store's quota beside the
	// blobs that jobs are using.
	ErrFull = errors.New("store full")

	// ErrClosed is returned by a store after Close.
	ErrClosed = errors.New("store closed")
)
