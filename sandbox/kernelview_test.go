package sandbox

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// genOverlapELF is the escape's layout: genELF's job with its program header table moved
// to phoff (8 <= phoff < 64), inside the ELF header. Entry 0 then overlaps header fields
// (its type is made of e_type and e_machine, or of e_ident padding, so nobody maps it);
// entries 1-3 are genELF's two PT_LOADs and PT_NOTE. With the table at 16, the old patcher
// wrote the new e_entry and then the table over it, restoring the original entry.
func genOverlapELF(phoff uint64, code []byte) []byte {
	b := genELF(code, 0)
	var loads [3][phdrSize]byte
	for i := range loads {
		copy(loads[i][:], b[ehdrSize+i*phdrSize:])
	}
	clear(b[ehdrSize : ehdrSize+3*phdrSize])
	le.PutUint64(b[32:], phoff)
	le.PutUint16(b[56:], 4)
	for i, l := range loads {
		copy(b[phoff+uint64(i+1)*phdrSize:], l[:])
	}
	return b
}

func TestHeaderOverlapRejected(t *testing.T) {
	good := genWriteExit("hi\n", 0)
	for _, phoff := range []uint64{0, 1, 8, 16, 24, 32, 40, 48, 56, 63} {
		bins := map[string][]byte{"moved": func() []byte { b := bytes.Clone(good); le.PutUint64(b[32:], phoff); return b }()}
		if phoff >= 8 {
			bins["crafted"] = genOverlapELF(phoff, genSyscall(39)[pageSize:])
		}
		for name, b := range bins {
			_, err := Patch(b, DefaultLimits())
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "overlaps the 64-byte ELF header") {
				t.Errorf("phoff %d (%s): got %v, want a rejection for overlapping the header", phoff, name, err)
			}
		}
	}
}

// wrongPatch returns edits for bin that the check must refuse, each a way the patcher could
// be wrong.
func TestCheckImageCatchesWrongPatches(t *testing.T) {
	bin := genWriteExit("hi\n", 0)
	lim := DefaultLimits()
	e, err := plan(bin, lim)
	if err != nil {
		t.Fatal(err)
	}
	image := func(e *edits) []byte {
		out := make([]byte, e.fileSize)
		copy(out, bin)
		e.apply(sliceAt(out))
		return out
	}
	if err := checkImage(bytes.NewReader(image(e)), int64(e.fileSize), e); err != nil {
		t.Fatalf("the correct patch: got %v, want accepted", err)
	}
	stubIdx := len(e.phdrs)/phdrSize - 1 // the stub's PT_LOAD is last in genELF's table
	for _, tt := range []struct {
		name string
		edit func(e *edits, img []byte) []byte
		want string
	}{
		{"the old bug: table written over e_entry", func(e *edits, _ []byte) []byte {
			// The table at 16, as the old patcher wrote it for a table inside the header:
			// the later write puts header bytes back over the new e_entry.
			bad := *e
			bad.phoff = 16
			bad.phdrs = bytes.Clone(bin[16 : 16+len(e.phdrs)])
			return image(&bad)
		}, "enters at"},
		{"original entry", func(e *edits, img []byte) []byte { copy(img[24:], bin[24:32]); return img }, "enters at"},
		{"table moved", func(e *edits, img []byte) []byte { le.PutUint64(img[32:], 0x100); return img }, "program header table"},
		{"stub segment writable", func(e *edits, img []byte) []byte {
			le.PutUint32(img[e.phoff+uint64(stubIdx*phdrSize)+4:], pfR|pfX|2)
			return img
		}, "program header table"},
		{"stub byte flipped", func(e *edits, img []byte) []byte { img[e.stubOff+stubEntryOffset] ^= 0xff; return img }, "not the stub"},
		{"truncated", func(e *edits, img []byte) []byte { return img[:len(img)-1] }, "bytes, want"},
		{"not ELF", func(e *edits, img []byte) []byte { img[0] = '#'; return img }, "no ELF header"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			img := tt.edit(e, image(e))
			err := checkImage(bytes.NewReader(img), int64(len(img)), e)
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a rejection mentioning %q", err, tt.want)
			}
		})
	}
	// A plan whose own edits are wrong is caught too, not only a wrong write.
	for name, mutate := range map[string]func(*edits){
		"segment over the guard page": func(e *edits) { e.stubVaddr -= pageSize; le.PutUint64(e.entry[:], e.stubVaddr+stubEntryOffset) },
		"entry not the stub's entry":  func(e *edits) { le.PutUint64(e.entry[:], e.stubVaddr) },
	} {
		t.Run(name, func(t *testing.T) {
			bad, _ := plan(bin, lim)
			mutate(bad)
			img := image(bad)
			if err := checkImage(bytes.NewReader(img), int64(len(img)), bad); !errors.Is(err, ErrRejected) {
				t.Fatalf("got %v, want a rejection", err)
			}
		})
	}
}

// FuzzKernelView is the differential test: for every input the validator accepts, the
// kernel-view reader, which shares no code with the validator, reads the original and the
// patched bytes and must agree with the validator on the entry, the table and the segments,
// and the patched image must pass checkImage.
func FuzzKernelView(f *testing.F) {
	f.Add(genWriteExit("hi\n", 0))
	f.Add(genLoop(10))
	f.Add(genELF(asmExit(3), 1<<20))
	for _, phoff := range []uint64{8, 16, 24, 40, 56} {
		f.Add(genOverlapELF(phoff, asmExit(0)))
	}
	lim := Limits{Memory: 64 << 20, MaxBinary: 64 << 10}.withDefaults()
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := validate(b, lim, false)
		if err != nil {
			return
		}
		orig, err := readKernelImage(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("validator accepted what the kernel refuses: %v", err)
		}
		if orig.interp {
			t.Fatal("validator accepted a PT_INTERP")
		}
		if orig.entry != in.entry || orig.phoff != in.phoff || len(orig.table) != in.phnum*phdrSize {
			t.Fatalf("header: kernel %#x/%d/%d, validator %#x/%d/%d", orig.entry, orig.phoff, len(orig.table), in.entry, in.phoff, in.phnum*phdrSize)
		}
		if !sameLoads(orig.loads, in.loads) {
			t.Fatalf("segments: kernel %+v, validator %+v", orig.loads, in.loads)
		}

		img, err := Patch(b, lim)
		if err != nil {
			t.Fatalf("validator accepted it, Patch refused it: %v", err)
		}
		e, _ := plan(b, lim)
		if err := checkImage(bytes.NewReader(img), int64(len(img)), e); err != nil {
			t.Fatal(err)
		}
		k, err := readKernelImage(bytes.NewReader(img), int64(len(img)))
		if err != nil {
			t.Fatal(err)
		}
		if k.phoff != in.phoff || len(k.table) != in.phnum*phdrSize {
			t.Fatalf("patched table at %d+%d, want %d+%d", k.phoff, len(k.table), in.phoff, in.phnum*phdrSize)
		}
		stub := k.loads[len(k.loads)-1]
		if !sameLoads(k.loads[:len(k.loads)-1], in.loads) {
			t.Fatalf("patched segments: kernel %+v, validator %+v", k.loads, in.loads)
		}
		if k.entry != stub.vaddr+stubEntryOffset || stub.flags != pfR|pfX {
			t.Fatalf("kernel enters at %#x, stub segment %+v", k.entry, stub)
		}
		// The stub jumps to stub address + delta: that must be the validated entry.
		delta := le.Uint64(img[stub.off+offDelta:])
		if stub.vaddr+delta != in.entry {
			t.Fatalf("stub continues at %#x, want the validated entry %#x", stub.vaddr+delta, in.entry)
		}
		if _, err := validate(img, lim, true); err != nil {
			t.Fatalf("patched image does not validate again: %v", err)
		}
	})
}

func sameLoads(k []kernelLoad, v []segment) bool {
	if len(k) != len(v) {
		return false
	}
	for i := range k {
		if k[i] != (kernelLoad{off: v[i].offset, vaddr: v[i].vaddr, filesz: v[i].filesz, memsz: v[i].memsz, flags: v[i].flags}) {
			return false
		}
	}
	return true
}
