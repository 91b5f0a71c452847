// Package protocol defines gridnode's stream protocols: IDs, protobuf messages and their
// framing, size caps, numeric error codes, and signed offers and receipts.
package protocol

//go:generate protoc --go_out=. --go_opt=paths=source_relative gridnode.proto
