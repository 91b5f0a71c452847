package node

import "errors"

var (
	// ErrBadIdentity is returned for an identity file that does not hold an Ed25519 key.
	ErrBadIdentity = errors.New("invalid identity key file")
	// ErrIdentityPerm is returned for an identity file that others may read or write.
	ErrIdentityPerm = errors.New("identity key file permissions too open")
	// ErrNotWorker is returned when a worker-only operation is asked of a client node.
	ErrNotWorker = errors.New("node is not a worker")
)
