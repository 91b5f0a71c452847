package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := genWriteExit("hi\n", 0)
	lim := DefaultLimits()
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	phdr := func(b []byte, i, field int) []byte { return b[ehdrSize+i*phdrSize+field:] }
	tests := []struct {
		name string
		bin  []byte
		lim  Limits
		want string // substring of the reason; "" means accepted
	}{
		{"good", good, lim, ""},
		{"empty", nil, lim, "truncated"},
		{"truncated header", good[:40], lim, "truncated"},
		{"truncated phdrs", good[:100], lim, "past the end"},
		{"truncated segment", good[:pageSize+4], lim, "past the end"},
		{"script", []byte("#!/bin/sh\necho ESCAPED\n"), lim, "script"},
		{"bad magic", mod(func(b []byte) []byte { b[1] = 'X'; return b }), lim, "magic"},
		{"32-bit class", mod(func(b []byte) []byte { b[4] = 1; return b }), lim, "64-bit"},
		{"big endian", mod(func(b []byte) []byte { b[5] = 2; return b }), lim, "little-endian"},
		{"ET_REL", mod(func(b []byte) []byte { le.PutUint16(b[16:], 1); return b }), lim, "ET_REL"},
		{"ET_CORE", mod(func(b []byte) []byte { le.PutUint16(b[16:], 4); return b }), lim, "ELF type 4"},
		{"aarch64", mod(func(b []byte) []byte { le.PutUint16(b[18:], 183); return b }), lim, "machine 183"},
		{"phentsize", mod(func(b []byte) []byte { le.PutUint16(b[54:], 32); return b }), lim, "header size"},
		{"no phdrs", mod(func(b []byte) []byte { le.PutUint16(b[56:], 0); return b }), lim, "program headers"},
		{"absurd phnum", mod(func(b []byte) []byte { le.PutUint16(b[56:], 60000); return b }), lim, "program headers"},
		{"phoff beyond EOF", mod(func(b []byte) []byte { le.PutUint64(b[32:], 1<<40); return b }), lim, "past the end"},
		{"phoff overflow", mod(func(b []byte) []byte { le.PutUint64(b[32:], ^uint64(0)-8); return b }), lim, "past the end"},
		{"interp", mod(func(b []byte) []byte { le.PutUint32(phdr(b, 2, 0), ptInterp); return b }), lim, "PT_INTERP"},
		{"no note", mod(func(b []byte) []byte { le.PutUint32(phdr(b, 2, 0), 0x6474e551); return b }), lim, "PT_NOTE"},
		{"filesz > memsz", mod(func(b []byte) []byte { le.PutUint64(phdr(b, 1, 40), 1); return b }), lim, "larger than memory"},
		{"segment past EOF", mod(func(b []byte) []byte {
			le.PutUint64(phdr(b, 1, 32), 1<<20)
			le.PutUint64(phdr(b, 1, 40), 1<<20)
			return b
		}), lim, "past the end"},
		{"incongruent", mod(func(b []byte) []byte { le.PutUint64(phdr(b, 1, 16), genEntry+8); return b }), lim, "congruent"},
		{"overlapping", mod(func(b []byte) []byte { le.PutUint64(phdr(b, 1, 16), genBase); le.PutUint64(phdr(b, 1, 8), 0); return b }), lim, "overlaps"},
		{"unsorted", mod(func(b []byte) []byte {
			le.PutUint64(phdr(b, 0, 16), genBase+2*pageSize)
			return b
		}), lim, "overlaps or precedes"},
		{"kernel range", mod(func(b []byte) []byte { le.PutUint64(phdr(b, 1, 16), 0xffff800000001000); return b }), lim, "job address range"},
		{"stack range", mod(func(b []byte) []byte {
			le.PutUint64(phdr(b, 1, 16), 0x7ffff0000000)
			le.PutUint64(b[24:], 0x7ffff0000000)
			return b
		}), lim, "job address range"},
		{"below mmap_min_addr", mod(func(b []byte) []byte {
			le.PutUint64(phdr(b, 0, 16), 0)
			le.PutUint64(phdr(b, 1, 16), pageSize)
			le.PutUint64(b[24:], pageSize)
			return b
		}), lim, "lowest mappable"},
		{"entry outside", mod(func(b []byte) []byte { le.PutUint64(b[24:], genBase+8); return b }), lim, "not inside an executable"},
		{"entry past code", mod(func(b []byte) []byte { le.PutUint64(b[24:], genEntry+pageSize); return b }), lim, "not inside an executable"},
		{"bss over memory", genELF(asmExit(0), 1<<30), lim, "memory"},
		{"over-size file", good, Limits{MaxBinary: 100}, "over the 100-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.lim.withDefaults()
			err := Validate(tt.bin, l)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want accepted", err)
				}
				return
			}
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("got %v, want a rejection", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestPatch(t *testing.T) {
	bin := genWriteExit("hi\n", 0)
	lim := DefaultLimits()
	img, err := Patch(bin, lim)
	if err != nil {
		t.Fatal(err)
	}
	in, err := validate(img, lim, true)
	if err != nil {
		t.Fatalf("patched image does not validate: %v", err)
	}
	if !bytes.Equal(img[ehdrSize+3*phdrSize:len(bin)], bin[ehdrSize+3*phdrSize:]) {
		t.Fatal("patch changed bytes outside the header and program headers")
	}
	stub := in.loads[len(in.loads)-1]
	if got, want := stub.vaddr, uint64(genEntry+2*pageSize); got != want {
		t.Errorf("stub at %#x, want %#x (one guard page above the code)", got, want)
	}
	if got, want := in.entry, stub.vaddr+stubDataSize; got != want {
		t.Errorf("entry %#x, want %#x", got, want)
	}
	if in.noteIdx >= 0 {
		t.Errorf("a PT_NOTE is left at index %d; the only one should have become the stub", in.noteIdx)
	}
	s := img[stub.offset:]
	if got := le.Uint64(s[offCPU:]); got != 600 {
		t.Errorf("RLIMIT_CPU %d, want 600", got)
	}
	if got, want := int64(le.Uint64(s[offDelta:])), int64(genEntry)-int64(stub.vaddr); got != want {
		t.Errorf("entry delta %d, want %d", got, want)
	}
	if !bytes.Equal(s[stubDataSize:], stubCode[:]) {
		t.Error("stub code not copied")
	}
}

// TestPatchMovesNote checks that a PT_NOTE placed before the last PT_LOAD is moved after
// it, so that the stub is the last PT_LOAD and the kernel sizes ET_DYN mappings right.
func TestPatchMovesNote(t *testing.T) {
	bin := genWriteExit("hi\n", 0)
	ph := bin[ehdrSize:]
	var note, load1 [phdrSize]byte
	copy(note[:], ph[2*phdrSize:])
	copy(load1[:], ph[phdrSize:])
	copy(ph[phdrSize:], note[:]) // order: LOAD, NOTE, LOAD
	copy(ph[2*phdrSize:], load1[:])
	img, err := Patch(bin, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint64{genBase, genEntry, genEntry + 2*pageSize} {
		p := img[ehdrSize+i*phdrSize:]
		if le.Uint32(p) != ptLoad || le.Uint64(p[16:]) != want {
			t.Errorf("phdr %d: type %d at %#x, want PT_LOAD at %#x", i, le.Uint32(p), le.Uint64(p[16:]), want)
		}
	}
}

// TestStubMatchesSource reassembles testdata/stub_amd64.S and compares it with stubCode.
func TestStubMatchesSource(t *testing.T) {
	as, err := exec.LookPath("as")
	if err != nil {
		t.Fatal("the GNU assembler 'as' is needed (apt-get install -y binutils)")
	}
	dir := t.TempDir()
	obj, raw := filepath.Join(dir, "stub.o"), filepath.Join(dir, "stub.bin")
	if out, err := exec.Command(as, "--64", "-o", obj, "testdata/stub_amd64.S").CombinedOutput(); err != nil {
		t.Fatalf("as: %v\n%s", err, out)
	}
	if out, err := exec.Command("objcopy", "-O", "binary", "-j", ".text", obj, raw).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != stubSize || !bytes.Equal(b[stubDataSize:], stubCode[:]) {
		var lit strings.Builder
		for i, c := range b[min(stubDataSize, len(b)):] {
			if i%16 == 0 {
				lit.WriteString("\n\t")
			}
			fmt.Fprintf(&lit, "0x%02x, ", c)
		}
		t.Fatalf("stub_x86_64.go is out of date with testdata/stub_amd64.S (%d bytes assembled, %d in Go); its stubCode should be:%s", len(b), stubSize, lit.String())
	}
}

func FuzzValidate(f *testing.F) {
	f.Add(genWriteExit("hi\n", 0))
	f.Add(genLoop(10))
	f.Add(genELF(asmExit(3), 1<<20))
	f.Add([]byte("#!/bin/sh\n"))
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	// A small MaxBinary keeps inputs, and so minimization, fast.
	lim := Limits{Memory: 64 << 20, MaxBinary: 64 << 10}.withDefaults()
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := Patch(b, lim)
		if err != nil {
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("Patch: got %v, want nil or a rejection", err)
			}
			return
		}
		in, err := validate(img, lim, true)
		if err != nil {
			t.Fatalf("patched image does not validate again: %v", err)
		}
		last := in.loads[len(in.loads)-1]
		if in.entry != last.vaddr+stubDataSize || last.filesz != uint64(stubSize) {
			t.Fatalf("patched image enters at %#x, want its stub at %#x", in.entry, last.vaddr+stubDataSize)
		}
	})
}
