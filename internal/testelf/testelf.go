// Package testelf builds small static x86-64 ELF jobs that the sandbox's validator accepts,
// for tests whose runners are fakes but whose submitters validate binaries as a real
// submitter does.
package testelf

import (
	"encoding/binary"
	"fmt"

	"github.com/gridnode/gridnode/sandbox"
)

// Exit0 returns a job that exits 0, followed by the bytes of pad (which make jobs distinct).
// Its layout is that of the sandbox's own synthetic jobs: page 0 holds the header, PT_LOAD
// R, PT_LOAD R+X and PT_NOTE headers and the note; page 1 the code, then pad.
func Exit0(pad []byte) []byte {
	const page, base, ehdr, phdr = 4096, 0x400000, 64, 56
	code := append([]byte{0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05}, pad...) // mov $60,%eax; xor %edi,%edi; syscall
	b := make([]byte, page+len(code))
	le := binary.LittleEndian
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // x86-64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+page)
	le.PutUint64(b[32:], ehdr)
	le.PutUint16(b[52:], ehdr)
	le.PutUint16(b[54:], phdr)
	le.PutUint16(b[56:], 3)
	noteOff := uint64(ehdr + 3*phdr)
	note := []byte("\x09\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00gridnode\x00\x00\x00\x00")
	copy(b[noteOff:], note)
	n := noteOff + uint64(len(note))
	PutPhdr(b, 0, 1, 4, 0, base, n, n, page)
	PutPhdr(b, 1, 1, 5, page, base+page, uint64(len(code)), uint64(len(code)), page)
	PutPhdr(b, 2, 4, 4, noteOff, base+noteOff, uint64(len(note)), uint64(len(note)), page)
	copy(b[page:], code)
	if err := sandbox.Validate(b, sandbox.Limits{MaxBinary: int64(len(b))}); err != nil {
		panic(fmt.Sprintf("testelf: the sandbox refuses the job: %v", err))
	}
	return b
}

// PutPhdr writes program header i of a 64-bit ELF whose table follows its 64-byte header.
func PutPhdr(b []byte, i int, typ, flags uint32, off, vaddr, filesz, memsz, align uint64) {
	p := b[64+i*56:]
	le := binary.LittleEndian
	le.PutUint32(p, typ)
	le.PutUint32(p[4:], flags)
	le.PutUint64(p[8:], off)
	le.PutUint64(p[16:], vaddr)
	le.PutUint64(p[24:], vaddr)
	le.PutUint64(p[32:], filesz)
	le.PutUint64(p[40:], memsz)
	le.PutUint64(p[48:], align)
}
