package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestBinfmtCouldMatchJob(t *testing.T) {
	const elf64 = "7f454c460201010000000000000000000200"
	tests := []struct {
		name, text string
		want       bool
	}{
		// Debian's qemu-user-binfmt entry for x86-64 (as on an arm64 host).
		{"qemu-x86_64", "enabled\ninterpreter /usr/libexec/qemu-binfmt/x86_64-binfmt-P\nflags: POCF\noffset 0\n" +
			"magic 7f454c4602010100000000000000000002003e00\nmask fffffffffffefe00fffffffffffffffffeffffff\n", true},
		{"qemu-aarch64", "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: F\noffset 0\n" +
			"magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n", false},
		{"disabled qemu-x86_64", "disabled\ninterpreter /usr/bin/qemu-x86_64\nflags: \noffset 0\n" +
			"magic 7f454c4602010100000000000000000002003e00\n", false},
		{"any 64-bit ELF", "enabled\ninterpreter /x\nflags: \noffset 0\nmagic 7f454c4602\n", true},
		{"free bytes (e_shoff)", "enabled\ninterpreter /x\nflags: \noffset 40\nmagic 4752494444\n", true},
		{"ELF32 only", "enabled\ninterpreter /x\nflags: \noffset 0\nmagic 7f454c4601\n", false},
		{"java", "enabled\ninterpreter /usr/bin/jexec\nflags: \noffset 0\nmagic cafebabe\n", false},
		{"wine by extension", "enabled\ninterpreter /usr/bin/wine\nflags: \nextension .exe\n", false},
		{"masked out machine", "enabled\ninterpreter /x\nflags: \noffset 0\nmagic " + elf64 + "b700\nmask ffffffffffffffffffffffffffffffffffff0000\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := parseBinfmtEntry(tt.name, tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.couldMatchJob(); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckBinfmtDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkBinfmtDir(filepath.Join(dir, "missing")); err != nil {
		t.Fatalf("binfmt_misc not mounted: got %v, want nil", err)
	}
	write("status", "enabled\n")
	write("register", "")
	write("java", "enabled\ninterpreter /usr/bin/jexec\nflags: \noffset 0\nmagic cafebabe\n")
	if err := checkBinfmtDir(dir); err != nil {
		t.Fatalf("only java: got %v, want nil", err)
	}
	write("qemu-x86_64", "enabled\ninterpreter /usr/bin/qemu-x86_64\nflags: F\noffset 0\nmagic 7f454c4602010100000000000000000002003e00\n")
	if err := checkBinfmtDir(dir); !errors.Is(err, ErrBinfmt) {
		t.Fatalf("qemu-x86_64 enabled: got %v, want ErrBinfmt", err)
	}
	write("status", "disabled\n")
	if err := checkBinfmtDir(dir); err != nil {
		t.Fatalf("binfmt_misc disabled: got %v, want nil", err)
	}
}
