package history

import "errors"

var (
	// ErrLocked: another process (a running daemon) has the database open.
	ErrLocked = errors.New("history database in use by another gridnode process")
	// ErrNotFound: no such job, or it is no longer kept.
	ErrNotFound = errors.New("no such job in the history")
	// ErrVersion: the database was written by a gridnode with another schema.
	ErrVersion = errors.New("history database of another version")
	// ErrReserved: a bucket name the history uses itself.
	ErrReserved = errors.New("reserved bucket")
)
