package sandbox

import "encoding/binary"

// Synthetic jobs built byte by byte, so the validator, patcher and launcher can be tested and
// fuzzed without a C compiler. Layout: page 0 holds the ELF header, three program headers
// (PT_LOAD R, PT_LOAD R+X, PT_NOTE) and the note; page 1 holds the code.

const (
	genBase  = 0x400000
	genEntry = genBase + pageSize
)

// genELF returns an ET_EXEC job whose code is code, with bss extra zero bytes after it.
func genELF(code []byte, bss uint64) []byte {
	b := make([]byte, pageSize+len(code))
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], etExec)
	le.PutUint16(b[18:], emX86_64)
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], genEntry)
	le.PutUint64(b[32:], ehdrSize)
	le.PutUint16(b[52:], ehdrSize)
	le.PutUint16(b[54:], phdrSize)
	le.PutUint16(b[56:], 3)
	noteOff := uint64(ehdrSize + 3*phdrSize)
	note := []byte("\x09\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00gridnode\x00\x00\x00\x00")
	copy(b[noteOff:], note)
	putPhdr(b, 0, ptLoad, pfR, 0, genBase, noteOff+uint64(len(note)), noteOff+uint64(len(note)))
	putPhdr(b, 1, ptLoad, pfR|pfX, pageSize, genEntry, uint64(len(code)), uint64(len(code))+bss)
	putPhdr(b, 2, ptNote, pfR, noteOff, genBase+noteOff, uint64(len(note)), uint64(len(note)))
	copy(b[pageSize:], code)
	return b
}

func putPhdr(b []byte, i int, typ, flags uint32, off, vaddr, filesz, memsz uint64) {
	p := b[ehdrSize+i*phdrSize:]
	le.PutUint32(p, typ)
	le.PutUint32(p[4:], flags)
	le.PutUint64(p[8:], off)
	le.PutUint64(p[16:], vaddr)
	le.PutUint64(p[24:], vaddr)
	le.PutUint64(p[32:], filesz)
	le.PutUint64(p[40:], memsz)
	le.PutUint64(p[48:], pageSize)
}

// x86-64 snippets.
func asmExit(code uint32) []byte {
	b := []byte{0xb8, 60, 0, 0, 0, 0xbf, 0, 0, 0, 0, 0x0f, 0x05} // mov $60,%eax; mov $code,%edi; syscall
	binary.LittleEndian.PutUint32(b[6:], code)
	return b
}

// genWriteExit writes msg to fd 1 and exits with code; msg follows the code.
func genWriteExit(msg string, code uint32) []byte {
	// mov $1,%eax; mov $1,%edi; lea msg(%rip),%rsi; mov $len,%edx; syscall
	w := []byte{0xb8, 1, 0, 0, 0, 0xbf, 1, 0, 0, 0, 0x48, 0x8d, 0x35, 0, 0, 0, 0, 0xba, 0, 0, 0, 0, 0x0f, 0x05}
	exit := asmExit(code)
	binary.LittleEndian.PutUint32(w[13:], uint32(len(w)-17+len(exit))) // rip after lea is offset 17
	binary.LittleEndian.PutUint32(w[18:], uint32(len(msg)))
	return genELF(append(append(w, exit...), msg...), 0)
}

// asmSpin spins n times.
func asmSpin(n uint64) []byte {
	b := []byte{0x48, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0x48, 0xff, 0xc9, 0x75, 0xfb} // movabs $n,%rcx; 1: dec %rcx; jnz 1b
	binary.LittleEndian.PutUint64(b[2:], n)
	return b
}

// genLoop spins n times and exits 0.
func genLoop(n uint64) []byte { return genELF(append(asmSpin(n), asmExit(0)...), 0) }

// genSyscall makes system call nr with no arguments, then writes "ESCAPED" and exits 0.
func genSyscall(nr uint32) []byte {
	b := []byte{0xb8, 0, 0, 0, 0, 0x0f, 0x05} // mov $nr,%eax; syscall
	binary.LittleEndian.PutUint32(b[1:], nr)
	esc := genWriteExit("ESCAPED", 0)
	return genELF(append(b, esc[pageSize:]...), 0)
}

// genLoopWrite spins n times, then writes "x" and exits 0 (a compute-bound job with output).
func genLoopWrite(n uint64) []byte {
	w := genWriteExit("x", 0)
	return genELF(append(asmSpin(n), w[pageSize:]...), 0)
}
