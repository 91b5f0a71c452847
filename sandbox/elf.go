package sandbox

import (
	"bytes"
	"encoding/binary"
	"math"
)

// ELF constants, from the kernel's include/uapi/linux/elf.h.
const (
	ehdrSize = 64
	phdrSize = 56
	maxPhnum = 64 // real static jobs have about 10; the kernel allows 1170
	pageSize = 4096
	userTop  = 0x7ffffffff000 // TASK_SIZE with 4-level paging
	// jobTop bounds a job's segments and stub: above it lie the kernel's stack and mmap
	// area (the vDSO), which the stub unmaps and replaces with the job's fixed stack.
	jobTop     = 0x7e0000000000
	minVaddr   = 0x10000 // vm.mmap_min_addr's default: ET_EXEC below it cannot map
	etExec     = 2
	etDyn      = 3
	emX86_64   = 62 // the only job architecture the sandbox runs so far
	emAArch64  = 183
	ptLoad     = 1
	ptInterp   = 3
	ptNote     = 4
	pfX        = 1
	pfR        = 4
	classELF64 = 2
	// maxDynAlign is the largest PT_LOAD alignment of a static PIE: the kernel rounds the
	// load bias down to the largest alignment, so a huge one (2^47) makes the bias 0.
	maxDynAlign = 2 << 20
	dataLSB     = 1
)

var le = binary.LittleEndian

// segment is one PT_LOAD as the kernel maps it.
type segment struct {
	offset, vaddr, filesz, memsz uint64
	flags                        uint32
}

// elfInfo is what validation learned about a binary.
type elfInfo struct {
	typ         uint16
	entry       uint64
	phoff       uint64
	phnum       int
	loads       []segment
	noteIdx     int // phdr index of the first PT_NOTE, -1 if none
	lastLoadIdx int // phdr index of the last PT_LOAD
	end         uint64
	memory      int64 // page-rounded bytes of all PT_LOADs
}

// validate reads exactly the fields Linux's binfmt_elf reads and rejects anything that is
// unsafe, unsupported or would not load. A patched image (patched=true) needs no PT_NOTE and
// must enter at its last PT_LOAD, the stub.
func validate(b []byte, lim Limits, patched bool) (*elfInfo, error) {
	maxBin := lim.MaxBinary
	if patched {
		maxBin += 2*pageSize + int64(stubSize)
	}
	if int64(len(b)) > maxBin {
		return nil, reject("binary is %d bytes, over the %d-byte limit", len(b), maxBin)
	}
	if bytes.HasPrefix(b, []byte("#!")) {
		return nil, reject("a #! script, not an ELF executable: build a static ELF job")
	}
	if magic := []byte("\x7fELF"); !bytes.HasPrefix(b, magic) && !bytes.HasPrefix(magic, b) {
		return nil, reject("not an ELF file (bad magic % x)", b[:min(len(b), 4)])
	}
	if len(b) < ehdrSize {
		return nil, reject("truncated: %d bytes is shorter than an ELF header", len(b))
	}
	if b[4] != classELF64 {
		return nil, reject("ELF class %d: only 64-bit (ELFCLASS64) jobs are accepted", b[4])
	}
	if b[5] != dataLSB {
		return nil, reject("ELF data encoding %d: only little-endian jobs are accepted", b[5])
	}
	if b[6] != 1 {
		return nil, reject("ELF version %d, want 1", b[6])
	}
	in := &elfInfo{noteIdx: -1, lastLoadIdx: -1}
	in.typ = le.Uint16(b[16:])
	switch in.typ {
	case etExec, etDyn:
	case 1:
		return nil, reject("ELF type ET_REL: a relocatable object, not an executable (link it)")
	default:
		return nil, reject("ELF type %d: only ET_EXEC and static ET_DYN are accepted", in.typ)
	}
	if m := le.Uint16(b[18:]); m != emX86_64 {
		return nil, reject("machine %d, not x86-64 (%d)", m, emX86_64)
	}
	in.entry = le.Uint64(b[24:])
	in.phoff = le.Uint64(b[32:])
	if es := le.Uint16(b[54:]); es != phdrSize {
		return nil, reject("program header size %d, want %d", es, phdrSize)
	}
	in.phnum = int(le.Uint16(b[56:]))
	if in.phnum < 1 || in.phnum > maxPhnum {
		return nil, reject("%d program headers: want 1 to %d", in.phnum, maxPhnum)
	}
	tableEnd := in.phoff + uint64(in.phnum*phdrSize)
	if in.phoff > uint64(len(b)) || tableEnd < in.phoff || tableEnd > uint64(len(b)) {
		return nil, reject("program headers at %d+%d run past the end of the %d-byte file", in.phoff, in.phnum*phdrSize, len(b))
	}
	// The patcher rewrites e_entry and the table: a table that shares bytes with the header
	// would make those edits overwrite each other (and its entries would be header fields the
	// kernel reads), so the kernel could run the job without the stub.
	if in.phoff < ehdrSize {
		return nil, reject("program header table at offset %d overlaps the %d-byte ELF header", in.phoff, ehdrSize)
	}
	for i := 0; i < in.phnum; i++ {
		p := b[in.phoff+uint64(i*phdrSize):]
		typ := le.Uint32(p)
		switch typ {
		case ptInterp:
			return nil, reject("dynamically linked (PT_INTERP): jobs must be static")
		case ptNote:
			if in.noteIdx < 0 {
				in.noteIdx = i
			}
		case ptLoad:
			s := segment{
				flags:  le.Uint32(p[4:]),
				offset: le.Uint64(p[8:]),
				vaddr:  le.Uint64(p[16:]),
				filesz: le.Uint64(p[32:]),
				memsz:  le.Uint64(p[40:]),
			}
			if err := in.addLoad(s, uint64(len(b))); err != nil {
				return nil, err
			}
			if align := le.Uint64(p[48:]); in.typ == etDyn && align > maxDynAlign {
				return nil, reject("PT_LOAD %d: alignment %#x over %#x: the kernel could place this static PIE at address 0", len(in.loads)-1, align, maxDynAlign)
			}
			in.lastLoadIdx = i
		}
	}
	if len(in.loads) == 0 {
		return nil, reject("no PT_LOAD segment")
	}
	if in.typ == etExec && in.loads[0].vaddr&^(pageSize-1) < minVaddr {
		return nil, reject("first segment at %#x is below the lowest mappable address %#x", in.loads[0].vaddr, minVaddr)
	}
	// A static PIE's first PT_LOAD with no file bytes is placed by vm_brk at its link
	// address, unrelocated: address 0 for a normal static PIE.
	if in.typ == etDyn && in.loads[0].filesz == 0 {
		return nil, reject("static PIE whose first segment has no file bytes: the kernel would map it at its link address %#x", in.loads[0].vaddr)
	}
	entrySeg := -1
	for i, s := range in.loads {
		if s.flags&pfX != 0 && in.entry >= s.vaddr && in.entry < s.vaddr+s.filesz {
			entrySeg = i
		}
	}
	if entrySeg < 0 {
		return nil, reject("entry point %#x is not inside an executable segment", in.entry)
	}
	if patched {
		if entrySeg != len(in.loads)-1 {
			return nil, reject("patched image does not enter at its stub")
		}
	} else if in.noteIdx < 0 {
		return nil, reject("no PT_NOTE segment to hold the sandbox stub (build with the SDK, which adds .note.gridnode)")
	}
	need := in.memory + lim.Stack
	if !patched {
		need += pageSize // the stub
	}
	if need > lim.Memory {
		return nil, reject("needs %d bytes of memory (segments %d + stub + stack %d), over the %d-byte limit", need, in.memory, lim.Stack, lim.Memory)
	}
	return in, nil
}

// addLoad checks one PT_LOAD against the file and the segments before it.
func (in *elfInfo) addLoad(s segment, fileLen uint64) error {
	n := len(in.loads)
	if s.memsz == 0 {
		return reject("PT_LOAD %d is empty", n)
	}
	if s.filesz > s.memsz {
		return reject("PT_LOAD %d: file size %d is larger than memory size %d", n, s.filesz, s.memsz)
	}
	if s.offset > fileLen || s.filesz > fileLen-s.offset {
		return reject("PT_LOAD %d: bytes %d+%d run past the end of the %d-byte file", n, s.offset, s.filesz, fileLen)
	}
	if s.offset%pageSize != s.vaddr%pageSize {
		return reject("PT_LOAD %d: offset %#x and address %#x are not congruent modulo the page size", n, s.offset, s.vaddr)
	}
	if s.vaddr > jobTop || s.memsz > jobTop-s.vaddr {
		return reject("PT_LOAD %d: %#x+%#x is outside the job address range (below %#x)", n, s.vaddr, s.memsz, uint64(jobTop))
	}
	if n > 0 && s.vaddr < in.end {
		return reject("PT_LOAD %d at %#x overlaps or precedes the previous segment (ending at %#x): segments must be sorted and disjoint", n, s.vaddr, in.end)
	}
	in.end = s.vaddr + s.memsz
	pages := pageUp(s.vaddr+s.memsz) - (s.vaddr &^ (pageSize - 1))
	if pages > math.MaxInt64-uint64(in.memory) {
		return reject("PT_LOAD %d: memory size overflows", n)
	}
	in.memory += int64(pages)
	in.loads = append(in.loads, s)
	return nil
}

// pageUp rounds x up to a page. Preconditions: x <= jobTop.
func pageUp(x uint64) uint64 { return (x + pageSize - 1) &^ (pageSize - 1) }

// Validate reports whether bin is a job the sandbox can run within lim. A refusal is a
// *RejectError carrying the reason.
func Validate(bin []byte, lim Limits) error {
	_, err := validate(bin, lim.withDefaults(), false)
	return err
}
