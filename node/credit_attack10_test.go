package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/gridnode/gridnode/credit"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
)

// TestAttack10CreditReplayStream: a submitter that earned one credit record resends its
// envelope on one credit stream, pipelined, without reading the acks. Keeper.Accept's
// cheap pre-check does not look at replays (check(…, false)), so each copy costs the
// worker a signature check (of a key the sender chose: RSA up to 8192 bits) before it is
// refused as a replay, and the handler goes on reading: 256 checks a stream, 2 streams
// at once, where before this change a stream carried one. A stream should end at the
// first record an honest submitter never sends (a replay, a forgery).
func TestAttack10CreditReplayStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, client := creditGrid(t, ctx, 1)
	w := ws[0]
	rep, err := client.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("x"), Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the worker's credit record", func() bool {
		rs, err := w.Credit().Records()
		return err == nil && len(rs) == 1
	})
	var env []byte
	for _, c := range credit.Issue(rep, client.ID(), time.Now()) {
		if c.Worker == w.ID() {
			h := client.Host()
			if env, err = protocol.SealCredit(c, h.Peerstore().PrivKey(h.ID())); err != nil {
				t.Fatal(err)
			}
		}
	}
	if env == nil {
		t.Fatal("no credit for the worker")
	}
	s, err := client.Host().NewStream(ctx, w.ID(), protocol.CreditID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	protocol.SetDeadline(s, 30*time.Second)
	const n = 256
	go func() {
		for range n {
			if protocol.WriteMsg(s, &protocol.CreditDelivery{Credit: env}) != nil {
				return
			}
		}
		s.CloseWrite()
	}()
	replays := 0
	for range n {
		var ack protocol.CreditAck
		if protocol.ReadMsg(s, &ack, protocol.MaxControlMsg) != nil {
			break
		}
		if err := ack.Err(); errors.Is(err, protocol.ErrBadRequest) {
			replays++
		}
	}
	if replays > 1 {
		t.Errorf("one stream carried %d replays of one record, each checked and answered; want the stream ended at the first", replays)
	}

	// An oversized frame is answered TOO_LARGE, which the handler's "malformed: end the
	// stream" test (Code_BAD_REQUEST only) misses: it reads on from the middle of the
	// oversized frame, taking its body for frames.
	s2, err := client.Host().NewStream(ctx, w.ID(), protocol.CreditID)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Reset()
	protocol.SetDeadline(s2, 30*time.Second)
	var inner bytes.Buffer
	protocol.WriteMsg(&inner, &protocol.CreditDelivery{Credit: []byte("not a credit")})
	body := append(inner.Bytes(), make([]byte, protocol.MaxCreditMsg+1-inner.Len())...)
	frame := binary.AppendUvarint(nil, uint64(len(body)))
	if _, err := s2.Write(append(frame, body...)); err != nil {
		t.Fatal(err)
	}
	acks := 0
	for range 3 {
		var ack protocol.CreditAck
		if protocol.ReadMsg(s2, &ack, protocol.MaxControlMsg) != nil {
			break
		}
		acks++
	}
	if acks > 1 {
		t.Errorf("one oversized frame was answered %d times: the handler read its body as frames", acks)
	}
}
