package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/protobuf/proto"
)

// chunk is how much ReadMsg allocates at a time for large messages, so memory grows with
// the bytes that actually arrive and not with what a length prefix claims.
const chunk = 64 << 10

// WriteMsg writes m to w with an unsigned varint length prefix, in one Write.
func WriteMsg(w io.Writer, m proto.Message) error { return WriteMsgPayload(w, m, nil) }

// smallPayload is the largest payload WriteMsgPayload copies to send with its header in one
// Write.
const smallPayload = 64 << 10

// WriteMsgPayload writes m as WriteMsg does, then payload raw: a small payload in the same
// Write (a tiny job's answer in one packet), a large one from where it lies, uncopied.
func WriteMsgPayload(w io.Writer, m proto.Message, payload []byte) error {
	if len(payload) > smallPayload {
		if err := WriteMsg(w, m); err != nil {
			return err
		}
		_, err := w.Write(payload)
		return err
	}
	size := proto.Size(m)
	buf := make([]byte, binary.MaxVarintLen64, binary.MaxVarintLen64+size+len(payload))
	n := binary.PutUvarint(buf, uint64(size))
	buf, err := proto.MarshalOptions{}.MarshalAppend(buf[:n], m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	_, err = w.Write(append(buf, payload...))
	return err
}

// ReadMsg reads one varint-delimited message into m. A length above max fails with
// ErrTooLarge before the body is read. It never reads past the message, so raw bytes that
// follow it on the stream stay there.
func ReadMsg(r io.Reader, m proto.Message, max int) error {
	n, err := readUvarint(r)
	if err != nil {
		return err
	}
	if n > uint64(max) {
		return fmt.Errorf("%w: message of %d bytes, limit %d", ErrTooLarge, n, max)
	}
	buf, err := readN(r, int(n))
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(buf, m); err != nil {
		return fmt.Errorf("%w: unmarshal %T: %v", ErrBadRequest, m, err)
	}
	return nil
}

// readUvarint reads a varint one byte at a time: a stream has no unread.
func readUvarint(r io.Reader) (uint64, error) {
	var b [1]byte
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && b[0] > 1 {
			break
		}
		x |= uint64(b[0]&0x7f) << (7 * i)
		if b[0] < 0x80 {
			if i > 0 && b[0] == 0 {
				return 0, fmt.Errorf("%w: non-minimal varint", ErrBadRequest)
			}
			return x, nil
		}
	}
	return 0, fmt.Errorf("%w: varint overflows 64 bits", ErrBadRequest)
}

// ReadPayload reads the n raw bytes that follow a header on a stream into one buffer of
// exactly n bytes, writing each piece to h (a hash) as it arrives: the one copy of a
// payload, without the growing buffer's copies or a message's unmarshalled second copy. A
// short read is io.ErrUnexpectedEOF. Preconditions: n was checked against its cap (the
// buffer is allocated before the bytes arrive; what that may pin is the caller's bound).
func ReadPayload(r io.Reader, n int64, h io.Writer) ([]byte, error) {
	buf := make([]byte, n)
	for off := 0; off < len(buf); {
		m, err := io.ReadFull(r, buf[off:min(len(buf), off+payloadPiece)])
		h.Write(buf[off : off+m])
		off += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

// payloadPiece is how much ReadPayload reads before hashing it: small enough that the
// bytes are still in the CPU's cache when hashed.
const payloadPiece = 256 << 10

// readN reads exactly n bytes from r into a buffer that starts at chunk bytes and grows
// only as data arrives (doubling), so a peer that announces n bytes and sends fewer pins no
// more than about twice what it sent. A short read is io.ErrUnexpectedEOF.
func readN(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, chunk))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), cap(buf)))
		}
		m, err := io.ReadFull(r, buf[len(buf):min(n, cap(buf))])
		buf = buf[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}
