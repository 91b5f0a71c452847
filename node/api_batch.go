package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gridnode/gridnode/jobs"
)

// POST /v1/batch runs a batch (jobs.Submitter.SubmitBatch): one binary, by job_cid or
// inline, and many inputs, each a verified job. The answer is JSON lines, one
// APIBatchResult per job as it is decided, in no particular order; a batch that cannot
// start is one line with index -1 and the error. At most apiBatchInputs inputs, and the
// body at most apiMaxBody.
const apiBatchInputs = 4096

// APIBatch is the body of POST /v1/batch.
type APIBatch struct {
	APISubmit
	Inputs [][]byte `json:"inputs"`
}

// APIBatchResult is one line of POST /v1/batch's answer: the job of Inputs[Index].
type APIBatchResult struct {
	Index int `json:"index"`
	*jobs.ReportJSON
}

func (n *Node) batchRoute(mux *http.ServeMux, last *lastBinary) {
	mux.HandleFunc("POST /v1/batch", func(w http.ResponseWriter, r *http.Request) {
		var body APIBatch
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, apiMaxBody)).Decode(&body); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(body.Inputs) == 0 || len(body.Inputs) > apiBatchInputs {
			http.Error(w, fmt.Sprintf("bad request: %d inputs, want 1 to %d", len(body.Inputs), apiBatchInputs), http.StatusBadRequest)
			return
		}
		req := body.Request
		if body.JobCID != "" {
			bin, status, err := n.storedBinary(r.Context(), body.APISubmit, last)
			if err != nil {
				http.Error(w, err.Error(), status)
				return
			}
			req.Binary = bin
		}
		http.NewResponseController(w).SetReadDeadline(time.Time{})
		w.Header().Set("Content-Type", "application/jsonl")
		var mu sync.Mutex
		out := json.NewEncoder(w)
		flush := http.NewResponseController(w)
		line := func(i int, rep *jobs.ReportJSON) {
			mu.Lock()
			defer mu.Unlock()
			out.Encode(APIBatchResult{Index: i, ReportJSON: rep})
			flush.Flush()
		}
		err := n.SubmitBatch(r.Context(), req, body.Inputs, func(i int, rep *jobs.Report, err error) {
			line(i, jobs.JSON(rep, err))
		})
		if err != nil {
			line(-1, jobs.JSON(nil, err))
		}
	})
}

// SubmitBatch runs req's binary on each of b.Inputs through the daemon and tells done of
// each job as the daemon decides it. A batch that could not start returns its report's
// error (the daemon's words; its kind is in the report, as done would get it).
func (c *APIClient) SubmitBatch(ctx context.Context, b APIBatch, done func(i int, rep *jobs.ReportJSON)) error {
	return c.exchange(ctx, http.MethodPost, "/v1/batch", b, func(r io.Reader) error {
		dec := json.NewDecoder(r)
		for dec.More() {
			var res APIBatchResult
			if err := dec.Decode(&res); err != nil {
				return fmt.Errorf("POST /v1/batch: decode: %w", err)
			}
			if res.ReportJSON == nil {
				return fmt.Errorf("POST /v1/batch: a line without a report")
			}
			if res.Index == -1 {
				return &BatchError{Report: res.ReportJSON}
			}
			if res.Index < 0 || res.Index >= len(b.Inputs) {
				return fmt.Errorf("POST /v1/batch: a report for input %d of %d", res.Index, len(b.Inputs))
			}
			done(res.Index, res.ReportJSON)
		}
		return nil
	})
}

// BatchError is a batch the daemon could not start; Report says why.
type BatchError struct{ Report *jobs.ReportJSON }

func (e *BatchError) Error() string { return e.Report.Error }
