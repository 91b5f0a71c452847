package node

import "errors"

var (
	// ErrBadIdentity is returned for an identity file that does not hold an Ed25519 key.
	ErrBadIdentity = errors.New("invalid identity key file")
	// ErrIdentityPerm is returned for an identity file that others may read or write.
	ErrIdentityPerm = errors.New("identity key file permissions too open")
	// ErrTokenPerm is returned for an API token file that others may read or write.
	ErrTokenPerm = errors.New("api token file permissions too open")
	// ErrAPIAddr is returned for an API address that is not on the loopback interface.
	ErrAPIAddr = errors.New("the submit API listens on loopback only (127.0.0.1:PORT or [::1]:PORT)")
	// ErrAPIInUse is returned when another daemon serves the API socket of the data dir.
	ErrAPIInUse = errors.New("another daemon serves this data dir's API socket")
	// ErrNotWorker is returned when a worker-only operation is asked of a client node.
	ErrNotWorker = errors.New("node is not a worker")
	// ErrDataDirInUse is returned when another node holds the data dir's lock.
	ErrDataDirInUse = errors.New("in use by another node")
	// ErrAddrInUse is returned for a listen address whose port another socket holds.
	ErrAddrInUse = errors.New("address already in use")
)
