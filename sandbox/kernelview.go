package sandbox

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// This file reads an executable the way Linux's binfmt_elf does (fs/binfmt_elf.c:
// load_elf_binary, load_elf_phdrs, elf_load, total_mapping_size), from the bytes the kernel
// will read: the sealed memfd. It shares no code or constants with the validator (elf.go)
// on purpose: it is the second opinion that checks the patched artefact, not the plan, and
// the differential fuzz target (FuzzKernelView) makes the two agree.

const (
	kBufSize   = 256  // BINPRM_BUF_SIZE: the header is read from the first 256 bytes
	kPhentsize = 56   // sizeof(struct elf64_phdr)
	kMaxTable  = 4096 // load_elf_phdrs: e_phnum * e_phentsize must not exceed ELF_MIN_ALIGN
	kPTLoad    = 1
	kPTInterp  = 3
	kPFX       = 1
	kPFR       = 4
	kPage      = 4096
)

// kernelLoad is one PT_LOAD as elf_load maps it: p_offset, p_vaddr, p_filesz, p_memsz, p_flags.
type kernelLoad struct {
	off, vaddr, filesz, memsz uint64
	flags                     uint32
}

// kernelImage is what the kernel learns from an executable's header and program headers.
type kernelImage struct {
	typ    uint16
	entry  uint64 // e_entry, before any ET_DYN load bias
	phoff  uint64
	table  []byte       // the e_phnum program headers the kernel reads at e_phoff
	loads  []kernelLoad // PT_LOADs in table order: the order the kernel maps them in
	interp bool         // a PT_INTERP is present: the kernel would run another program
	// maxAlign is maximum_alignment(): the largest power-of-two p_align of the PT_LOADs,
	// which the kernel aligns a static PIE's load bias to.
	maxAlign uint64
}

// readKernelImage reads r (size bytes) as load_elf_binary does, refusing what it refuses.
func readKernelImage(r io.ReaderAt, size int64) (*kernelImage, error) {
	var buf [kBufSize]byte
	n, err := r.ReadAt(buf[:min(int64(kBufSize), size)], 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	h := buf[:n]
	if len(h) < 64 || !bytes.Equal(h[:4], []byte{0x7f, 'E', 'L', 'F'}) {
		return nil, fmt.Errorf("kernel view: no ELF header")
	}
	u16 := binary.LittleEndian.Uint16
	u32 := binary.LittleEndian.Uint32
	u64 := binary.LittleEndian.Uint64
	im := &kernelImage{typ: u16(h[16:]), entry: u64(h[24:]), phoff: u64(h[32:])}
	if im.typ != 2 && im.typ != 3 {
		return nil, fmt.Errorf("kernel view: e_type %d", im.typ)
	}
	if m := u16(h[18:]); m != 62 { // elf_check_arch on x86-64
		return nil, fmt.Errorf("kernel view: e_machine %d", m)
	}
	if es := u16(h[54:]); es != kPhentsize {
		return nil, fmt.Errorf("kernel view: e_phentsize %d", es)
	}
	tsize := int64(u16(h[56:])) * kPhentsize
	if tsize == 0 || tsize > kMaxTable {
		return nil, fmt.Errorf("kernel view: %d bytes of program headers", tsize)
	}
	if im.phoff > uint64(size) || uint64(tsize) > uint64(size)-im.phoff {
		return nil, fmt.Errorf("kernel view: program headers past the end of the file")
	}
	im.table = make([]byte, tsize)
	if _, err := r.ReadAt(im.table, int64(im.phoff)); err != nil {
		return nil, fmt.Errorf("kernel view: read program headers: %w", err)
	}
	for p := im.table; len(p) >= kPhentsize; p = p[kPhentsize:] {
		switch u32(p) {
		case kPTInterp:
			im.interp = true
		case kPTLoad:
			if a := u64(p[48:]); a&(a-1) == 0 {
				im.maxAlign = max(im.maxAlign, a)
			}
			im.loads = append(im.loads, kernelLoad{
				flags: u32(p[4:]), off: u64(p[8:]), vaddr: u64(p[16:]),
				filesz: u64(p[32:]), memsz: u64(p[40:]),
			})
		}
	}
	return im, nil
}

// checkImage reads the final image from r (size bytes, the sealed memfd in production) as
// the kernel will and refuses it unless the kernel will enter the stub with the edits e
// planned: e_entry is the stub's entry, the table it reads is the planned one, the stub's
// segment is the only one mapped at the entry, mapped last and executable, with a guard page
// below it, and its bytes are the stub's. A job reaches exec only after this check.
func checkImage(r io.ReaderAt, size int64, e *edits) error {
	bad := func(format string, args ...any) error {
		return reject("patched image check: "+format, args...)
	}
	if uint64(size) != e.fileSize {
		return bad("image is %d bytes, want %d", size, e.fileSize)
	}
	im, err := readKernelImage(r, size)
	if err != nil {
		return bad("%v", err)
	}
	want := binary.LittleEndian.Uint64(e.entry[:])
	switch {
	case want != e.stubVaddr+stubEntryOffset:
		return bad("planned entry %#x is not the stub's entry %#x", want, e.stubVaddr+stubEntryOffset)
	case im.typ != e.typ:
		return bad("e_type %d, want %d", im.typ, e.typ)
	case im.entry != want:
		return bad("the kernel enters at %#x, not at the stub (%#x)", im.entry, want)
	case im.phoff != e.phoff || !bytes.Equal(im.table, e.phdrs):
		return bad("the kernel reads a program header table other than the validated one")
	case im.interp:
		return bad("the kernel would load an interpreter")
	case len(im.loads) == 0:
		return bad("no PT_LOAD")
	}
	if im.typ == 3 && (im.maxAlign > 2<<20 || im.loads[0].filesz == 0) {
		// Either makes the kernel map a static PIE at its link address (0), not at a bias.
		return bad("static PIE with alignment %#x and a first segment of %d file bytes: it may load at address 0", im.maxAlign, im.loads[0].filesz)
	}
	last := im.loads[len(im.loads)-1]
	stubLoad := kernelLoad{off: e.stubOff, vaddr: e.stubVaddr, filesz: uint64(len(e.stub)), memsz: uint64(len(e.stub)), flags: kPFR | kPFX}
	if last != stubLoad {
		return bad("the last PT_LOAD is %+v, not the stub's %+v", last, stubLoad)
	}
	for i, l := range im.loads[:len(im.loads)-1] {
		// Every other segment ends, page-rounded, a guard page below the stub (so no later
		// mapping or bss clearing can touch it), and the first is the lowest (ET_DYN's
		// reservation spans first to last by index).
		top := l.vaddr + l.memsz
		if top < l.vaddr || (top+kPage-1)&^(kPage-1)+kPage > e.stubVaddr {
			return bad("PT_LOAD %d (%#x+%#x) reaches the stub's guard page at %#x", i, l.vaddr, l.memsz, e.stubVaddr-kPage)
		}
		if l.vaddr&^(kPage-1) < im.loads[0].vaddr&^(kPage-1) {
			return bad("PT_LOAD %d is below the first PT_LOAD", i)
		}
	}
	if want < last.vaddr || want-last.vaddr >= last.filesz {
		return bad("entry %#x is outside the stub's segment", want)
	}
	got := make([]byte, len(e.stub))
	if _, err := r.ReadAt(got, int64(e.stubOff)); err != nil && err != io.EOF {
		return bad("read stub: %v", err)
	}
	if !bytes.Equal(got, e.stub) {
		return bad("the bytes mapped at the stub's address are not the stub")
	}
	return nil
}
