package credit

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/protocol"
)

// Summary is a donor's verified credit: CPU time that quorums accepted, by submitter and
// by day (UTC, of the submitter's signature). `gridnode credit --json` and GET /v1/credit.
type Summary struct {
	Records     int     `json:"records"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	BySubmitter []Total `json:"by_submitter"` // most CPU first
	ByDay       []Total `json:"by_day"`       // oldest first
}

// Total is the credit of one submitter or one day.
type Total struct {
	Submitter  string  `json:"submitter,omitempty"`
	Day        string  `json:"day,omitempty"` // 2006-01-02
	Records    int     `json:"records"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// Summarize adds up rs.
func Summarize(rs []Record) Summary {
	s := Summary{BySubmitter: []Total{}, ByDay: []Total{}}
	subs, days := map[string]*Total{}, map[string]*Total{}
	for _, r := range rs {
		sec := float64(r.CPUUs) / 1e6
		s.Records++
		s.CPUSeconds += sec
		day := r.Time.UTC().Format("2006-01-02")
		for _, t := range []*Total{total(subs, r.Submitter, Total{Submitter: r.Submitter}), total(days, day, Total{Day: day})} {
			t.Records++
			t.CPUSeconds += sec
		}
	}
	for _, t := range subs {
		s.BySubmitter = append(s.BySubmitter, *t)
	}
	for _, t := range days {
		s.ByDay = append(s.ByDay, *t)
	}
	slices.SortFunc(s.BySubmitter, func(a, b Total) int {
		return cmp.Or(cmp.Compare(b.CPUSeconds, a.CPUSeconds), cmp.Compare(a.Submitter, b.Submitter))
	})
	slices.SortFunc(s.ByDay, func(a, b Total) int { return cmp.Compare(a.Day, b.Day) })
	return s
}

func total(m map[string]*Total, k string, zero Total) *Total {
	if t := m[k]; t != nil {
		return t
	}
	m[k] = &zero
	return m[k]
}

// maxExportLine bounds one line of an export: a record with its envelope in base64.
const maxExportLine = 4*protocol.MaxEnvelope/3 + 4<<10

// Verify checks an export (JSON lines of Record, as `gridnode credit --export` writes):
// every envelope's signature and signer, that it says what its line says, that it is
// accepted, and, unless worker is "", that it names worker. A second record for the same
// receipt counts once. It returns the records that check out and why each other line does
// not.
func Verify(r io.Reader, worker peer.ID) (ok []Record, bad []error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxExportLine)
	seen := map[string]bool{}
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		rec, err := verifyLine(b, worker, seen)
		if err != nil {
			bad = append(bad, fmt.Errorf("line %d: %w", line, err))
			continue
		}
		ok = append(ok, rec)
	}
	if err := sc.Err(); err != nil {
		bad = append(bad, fmt.Errorf("read: %w", err))
	}
	return ok, bad
}

func verifyLine(b []byte, worker peer.ID, seen map[string]bool) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("not a credit record: %v", err)
	}
	c, err := protocol.OpenCredit(r.Envelope)
	if err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrForged, err)
	}
	want := RecordOf(c, r.Envelope, r.Received)
	want.Received = r.Received
	switch {
	case !c.Accepted:
		return Record{}, ErrNotAccepted
	case worker != "" && c.Worker != worker:
		return Record{}, fmt.Errorf("%w: %s", ErrNotMine, c.Worker)
	case want.JobCID != r.JobCID || want.InputCID != r.InputCID || want.Worker != r.Worker || want.Submitter != r.Submitter ||
		want.CPUUs != r.CPUUs || want.Accepted != r.Accepted || want.ReceiptSHA256 != r.ReceiptSHA256 || !want.Time.Equal(r.Time):
		return Record{}, fmt.Errorf("%w: the line says other than its signed envelope", ErrForged)
	case seen[hex.EncodeToString(c.ReceiptSHA256)]:
		return Record{}, fmt.Errorf("%w: receipt %x", ErrReplay, c.ReceiptSHA256)
	}
	seen[hex.EncodeToString(c.ReceiptSHA256)] = true
	return want, nil
}
