package jobs

// vote is one replica's verdict as the tally counts it.
type vote struct {
	v        Verdict
	prefix   string // the worker's network prefix (/24, /48); with distinct, one prefix counts once
	anchored bool   // a trusted worker, a local run or an established record
}

// count is the votes for one verdict.
type count struct {
	n        int
	prefixes map[string]bool
	anchored int
}

// tally counts replicas' verdicts until one is accepted: quorum votes (from distinct
// network prefixes when distinct is set), at least one of them anchored. It is pure, for
// testing.
type tally struct {
	quorum   int
	distinct bool
	votes    map[Verdict]*count
	accepted *Verdict
}

func newTally(quorum int, distinct bool) *tally {
	return &tally{quorum: quorum, distinct: distinct, votes: make(map[Verdict]*count)}
}

// add counts x and reports whether its verdict has just been accepted. Votes after a
// verdict was accepted do not count.
func (t *tally) add(x vote) bool {
	if t.accepted != nil {
		return false
	}
	c := t.votes[x.v]
	if c == nil {
		c = &count{prefixes: make(map[string]bool)}
		t.votes[x.v] = c
	}
	c.n++
	c.prefixes[x.prefix] = true
	if x.anchored {
		c.anchored++
	}
	if t.need(c) == 0 {
		t.accepted = &x.v
		return true
	}
	return false
}

// counted is how many of c's votes count toward the quorum.
func (t *tally) counted(c *count) int {
	if t.distinct {
		return len(c.prefixes)
	}
	return c.n
}

// need is how many more agreeing replicas c's verdict needs at least to be accepted.
func (t *tally) need(c *count) int {
	n := max(t.quorum-t.counted(c), 0)
	if c.anchored == 0 {
		n = max(n, 1)
	}
	return n
}

// best is the most counted votes any verdict has.
func (t *tally) best() int {
	n := 0
	for _, c := range t.votes {
		n = max(n, t.counted(c))
	}
	return n
}

// short is how many more replicas are needed at least before any verdict can be
// accepted: 0 once one is.
func (t *tally) short() int {
	if t.accepted != nil {
		return 0
	}
	n := t.need(&count{prefixes: map[string]bool{}}) // a verdict not seen yet
	for _, c := range t.votes {
		n = min(n, t.need(c))
	}
	return n
}

// wantsAnchor reports whether some verdict has the votes of a quorum and lacks only an
// anchored one: the next replica should go to an anchored worker.
func (t *tally) wantsAnchor() bool {
	if t.accepted != nil {
		return false
	}
	for _, c := range t.votes {
		if c.anchored == 0 && t.counted(c) >= t.quorum {
			return true
		}
	}
	return false
}
