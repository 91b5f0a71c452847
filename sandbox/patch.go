package sandbox

import (
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
	lim = lim.withDefaults()
	in, err := validate(bin, lim, false)
	if err != nil {
		return nil, err
	}
	stubVaddr := pageUp(in.end) + pageSize
	if stubVaddr > userTop-pageSize {
		return nil, reject("no room for the sandbox stub above the segments ending at %#x", in.end)
	}
	fileOff := pageUp(uint64(len(bin)))
	out := make([]byte, fileOff+uint64(stubSize))
	copy(out, bin)

	stub := out[fileOff:]
	cpu := uint64(math.Ceil(lim.CPU.Seconds()))
	cpu = max(cpu, 1)
	putRlimit(stub[offCPU:], cpu, cpu+1)
	putRlimit(stub[offStack:], uint64(lim.Stack), uint64(lim.Stack))
	putRlimit(stub[offCore:], 0, 0)
	putRlimit(stub[offFSize:], 0, 0)
	putRlimit(stub[offAS:], uint64(lim.Memory)+asSlack, uint64(lim.Memory)+asSlack)
	le.PutUint64(stub[offDelta:], in.entry-stubVaddr) // two's complement: entry is below
	copy(stub[stubDataSize:], stubCode[:])

	// Rewrite the note's header as the stub's PT_LOAD and move it after the last PT_LOAD.
	ph := out[in.phoff : in.phoff+uint64(in.phnum*phdrSize)]
	var load [phdrSize]byte
	le.PutUint32(load[0:], ptLoad)
	le.PutUint32(load[4:], pfR|pfX)
	le.PutUint64(load[8:], fileOff)
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
	le.PutUint64(out[24:], stubVaddr+stubDataSize)
	return out, nil
}

func putRlimit(b []byte, cur, max uint64) {
	le.PutUint64(b, cur)
	le.PutUint64(b[8:], max)
}

// cpuLimit is the CPU time after which the kernel sends SIGXCPU, as the stub sets it.
func cpuLimit(lim Limits) time.Duration {
	return time.Duration(max(math.Ceil(lim.CPU.Seconds()), 1)) * time.Second
}
