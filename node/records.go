package node

import "github.com/gridnode/gridnode/jobs"

// Records returns the submitter's record of workers (DATA/workers.json).
func (n *Node) Records() *jobs.Records { return n.jobs.sub.Records() }
