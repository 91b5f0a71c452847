// Package cids computes and checks gridnode content identifiers: CIDv1, raw codec, sha2-256
// over the whole blob, the same as `ipfs block put --cid-codec raw` for blocks that fit.
package cids

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// ErrMismatch is returned when bytes do not hash to the CID they were fetched under.
var ErrMismatch = errors.New("content does not match its CID")

// ErrUnsupported is returned for a well-formed CID of another version, codec or hash.
var ErrUnsupported = errors.New("unsupported CID: want CIDv1, raw codec, sha2-256")

// Sum returns the CID of b.
func Sum(b []byte) cid.Cid {
	d := sha256.Sum256(b)
	return FromDigest(d[:])
}

// FromDigest returns the CID for a sha2-256 digest.
// Preconditions: len(digest) == sha256.Size.
func FromDigest(digest []byte) cid.Cid {
	m, err := mh.Encode(digest, mh.SHA2_256)
	if err != nil {
		// Encode fails only for a wrong digest length, which is a caller bug.
		return cid.Undef
	}
	return cid.NewCidV1(cid.Raw, m)
}

// Digest returns the sha2-256 digest c names, or false if c is not of the gridnode form
// (Check).
func Digest(c cid.Cid) (d [sha256.Size]byte, ok bool) {
	if Check(c) != nil {
		return d, false
	}
	m, err := mh.Decode(c.Hash())
	if err != nil || len(m.Digest) != sha256.Size {
		return d, false
	}
	return [sha256.Size]byte(m.Digest), true
}

// Parse decodes the text form of a CID and checks that it is of the gridnode form.
func Parse(s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("parse cid %q: %w", s, err)
	}
	if err := Check(c); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

// Cast decodes the binary form of a CID (as sent on the wire) and checks its form.
func Cast(b []byte) (cid.Cid, error) {
	c, err := cid.Cast(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("decode cid: %w", err)
	}
	if err := Check(c); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

// Check reports whether c is a CIDv1 with the raw codec and a sha2-256 multihash.
func Check(c cid.Cid) error {
	if !c.Defined() {
		return fmt.Errorf("%w: undefined", ErrUnsupported)
	}
	p := c.Prefix()
	if p.Version != 1 || p.Codec != cid.Raw || p.MhType != mh.SHA2_256 || p.MhLength != sha256.Size {
		return fmt.Errorf("%w: got %s", ErrUnsupported, c)
	}
	return nil
}

// Verifier hashes a stream and checks it against an expected CID at the end.
type Verifier struct {
	want cid.Cid
	h    hash.Hash
	n    int64
}

// NewVerifier returns a Verifier for want.
func NewVerifier(want cid.Cid) *Verifier { return &Verifier{want: want, h: sha256.New()} }

// Write hashes p; it never fails.
func (v *Verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	return v.h.Write(p)
}

// Verify reports whether everything written hashes to the expected CID.
func (v *Verifier) Verify() error {
	got := FromDigest(v.h.Sum(nil))
	if !got.Equals(v.want) {
		return fmt.Errorf("%w: got %s (%d bytes), want %s", ErrMismatch, got, v.n, v.want)
	}
	return nil
}
