// Package store keeps content-addressed blobs on disk, under a quota, and moves them between
// peers over the blob protocol.
package store
