package cids

import (
	"bytes"
	"errors"
	"testing"
)

func TestSumKnown(t *testing.T) {
	// `ipfs block put --cid-codec raw` of "hello world\n" (no newline here: empty input).
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
		{"hello", []byte("hello world\n"), "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sum(tt.in).String(); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			c, err := Parse(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Equals(Sum(tt.in)) {
				t.Fatalf("parse round trip: got %s", c)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "garbage", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG" /* CIDv0 */} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q): got nil error, want one", s)
		}
	}
}

func TestVerifier(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 100000)
	v := NewVerifier(Sum(data))
	v.Write(data[:500])
	v.Write(data[500:])
	if err := v.Verify(); err != nil {
		t.Fatal(err)
	}
	v = NewVerifier(Sum(data))
	v.Write(data[1:])
	if err := v.Verify(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("got %v, want ErrMismatch", err)
	}
}
