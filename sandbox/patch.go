package sandbox

import (
	"bytes"
	"io"
	"math"
	"time"
)

// asSlack is address space allowed above Limits.Memory for what the kernel maps by itself
// (vDSO, vvar, the initial stack's arguments), so stack growth reaches Limits.Stack.
const asSlack = 1 << 20

// Patch validates bin and returns a copy with the entry stub installed: the first PT_NOTE
// becomes a PT_LOAD holding the stub, placed one guard page above every segment and moved to
// the end of the PT_LOADs in the header table (the kernel sizes an ET_DYN mapping from the
// first and last PT_LOAD); e_entry points at the stub. The job's CID stays that of bin.
func Patch(bin []byte, lim Limits) ([]byte, error) {
	e, err := plan(bin, lim.withDefaults())
	if err != nil {
		return nil, err
	}
	out := make([]byte, e.fileSize)
	copy(out, bin)
	e.apply(sliceAt(out))
	if err := checkImage(bytes.NewReader(out), int64(len(out)), e); err != nil {
		return nil, err
	}
	return out, nil
}

// edits are the only bytes patching changes: e_entry, the program header table, and the
// stub appended at a page boundary past the end of the file. The launcher writes the
// original binary and then these, instead of building a patched copy.
type edits struct {
	entry     [8]byte
	phoff     uint64
	phdrs     []byte
	stubOff   uint64
	stub      []byte
	stubVaddr uint64 // where the stub's PT_LOAD maps (before any ET_DYN load bias)
	typ       uint16 // e_type, unchanged
	fileSize  uint64 // of the patched image
}

// parts lists the edits as (bytes, file offset) in the order apply writes them.
func (e *edits) parts() []struct {
	b   []byte
	off uint64
} {
	return []struct {
		b   []byte
		off uint64
	}{{e.entry[:], 24}, {e.phdrs, e.phoff}, {e.stub, e.stubOff}}
}

// disjoint reports whether no two edits share a byte. apply's result then does not depend
// on the order of its writes; validate's header rule makes it hold, and plan checks it.
func (e *edits) disjoint() bool {
	ps := e.parts()
	for i := range ps {
		for j := i + 1; j < len(ps); j++ {
			a, b := ps[i], ps[j]
			if a.off < b.off+uint64(len(b.b)) && b.off < a.off+uint64(len(a.b)) {
				return false
			}
		}
	}
	return true
}

// apply writes the edits over a copy of the original binary.
func (e *edits) apply(w io.WriterAt) error {
	for _, part := range e.parts() {
		if _, err := w.WriteAt(part.b, int64(part.off)); err != nil {
			return err
		}
	}
	return nil
}

// sliceAt writes into a byte slice. Preconditions: writes fit.
type sliceAt []byte

func (s sliceAt) WriteAt(p []byte, off int64) (int, error) { return copy(s[off:], p), nil }

// plan validates bin and computes its edits. Preconditions: lim has its defaults.
func plan(bin []byte, lim Limits) (*edits, error) {
	in, err := validate(bin, lim, false)
	if err != nil {
		return nil, err
	}
	stubVaddr := pageUp(in.end) + pageSize
	if stubVaddr > jobTop-pageSize {
		return nil, reject("no room for the sandbox stub above the segments ending at %#x", in.end)
	}
	e := &edits{
		phoff:   in.phoff,
		phdrs:   bytes.Clone(bin[in.phoff : in.phoff+uint64(in.phnum*phdrSize)]),
		stubOff: pageUp(uint64(len(bin))),
		stub:    buildStub(lim, in.entry, stubVaddr),

		stubVaddr: stubVaddr,
		typ:       in.typ,
	}
	e.fileSize = e.stubOff + uint64(len(e.stub))
	le.PutUint64(e.entry[:], stubVaddr+stubEntryOffset)

	// Rewrite the note's header as the stub's PT_LOAD and move it after the last PT_LOAD.
	ph := e.phdrs
	var load [phdrSize]byte
	le.PutUint32(load[0:], ptLoad)
	le.PutUint32(load[4:], pfR|pfX)
	le.PutUint64(load[8:], e.stubOff)
	le.PutUint64(load[16:], stubVaddr)
	le.PutUint64(load[24:], stubVaddr)
	le.PutUint64(load[32:], uint64(stubSize))
	le.PutUint64(load[40:], uint64(stubSize))
	le.PutUint64(load[48:], pageSize)
	dst := in.lastLoadIdx
	if in.noteIdx > in.lastLoadIdx {
		dst = in.lastLoadIdx + 1
	}
	n, d := in.noteIdx*phdrSize, dst*phdrSize
	if n < d {
		copy(ph[n:d], ph[n+phdrSize:d+phdrSize])
	} else {
		copy(ph[d+phdrSize:n+phdrSize], ph[d:n])
	}
	copy(ph[d:], load[:])
	if !e.disjoint() {
		return nil, reject("the patcher's edits would overlap (program headers at %d+%d, stub at %d)", e.phoff, len(e.phdrs), e.stubOff)
	}
	return e, nil
}

// cpuLimit is the CPU time after which the kernel sends SIGXCPU, as the stub sets it.
func cpuLimit(lim Limits) time.Duration {
	return time.Duration(max(math.Ceil(lim.CPU.Seconds()), 1)) * time.Second
}
