package sdk_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gridnode/gridnode/sdk"
)

// helpersJob exercises the header's helpers and prints the results, one per line.
const helpersJob = `#include "gridjob.h"
int main(void) {
	size_t n;
	unsigned char *in = gj_read_all(&n);
	if (!in) gj_fail("read_all");
	char buf[64];
	size_t k;
	k = gj_fmt_u64(buf, 18446744073709551615ull); buf[k++] = '\n'; gj_write_all(1, buf, k);
	k = gj_fmt_i64(buf, -9223372036854775807ll - 1); buf[k++] = '\n'; gj_write_all(1, buf, k);
	k = gj_fmt_hex(buf, 0xdeadbeef); buf[k++] = '\n'; gj_write_all(1, buf, k);
	gj_hex_encode(buf, "\x00\x7f\xff", 3); buf[6] = '\n'; gj_write_all(1, buf, 7);
	memcpy(buf, "abcdefgh", 8);
	memmove(buf + 2, buf, 6); buf[8] = '\n'; gj_write_all(1, buf, 9);
	memcpy(buf, "abcdefgh", 8);
	memmove(buf, buf + 2, 6); buf[8] = '\n'; gj_write_all(1, buf, 9);
	memset(buf, 'z', 3); buf[3] = '\n'; gj_write_all(1, buf, 4);
	gj_print_u64(memcmp("abc", "abd", 3) < 0);
	uint64_t v = 0;
	size_t used = gj_parse_u64((const char *)in, n, &v);
	gj_print_u64(used);
	gj_print_u64(v);
	unsigned char *a = gj_alloc(3), *b = gj_alloc(1);
	gj_print_u64((size_t)(b - a));
	gj_print_u64(gj_alloc((size_t)1 << 40) == 0);
	return 42;
}
`

const helpersWant = `18446744073709551615
-9223372036854775808
deadbeef
007fff
ababcdef
cdefghgh
zzz
1
6
1234
16
1
`

func TestCompileRunsNatively(t *testing.T) {
	ctx := context.Background()
	bin := filepath.Join(t.TempDir(), "job")
	if err := sdk.Compile(ctx, []byte(helpersJob), bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Stdin = strings.NewReader("  1234xyz")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Fatalf("run: got err %v, want exit status 42", err)
	}
	if string(out) != helpersWant {
		t.Errorf("got output\n%s\nwant\n%s", out, helpersWant)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var notes, interps int
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_NOTE:
			notes++
		case elf.PT_INTERP:
			interps++
		}
	}
	if notes == 0 {
		t.Errorf("got %d PT_NOTE headers, want at least 1", notes)
	}
	if interps != 0 {
		t.Errorf("got %d PT_INTERP headers, want 0", interps)
	}
	if f.Type != elf.ET_EXEC {
		t.Errorf("got type %v, want ET_EXEC", f.Type)
	}
	sec := f.Section(".note.gridnode")
	if sec == nil {
		t.Fatal("no .note.gridnode section")
	}
	data, err := sec.Data()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{9, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 'g', 'r', 'i', 'd', 'n', 'o', 'd', 'e', 0, 0, 0, 0, 1, 0, 0, 0}
	if !bytes.Equal(data, want) {
		t.Errorf("got note % x, want % x", data, want)
	}
}

func TestCompileError(t *testing.T) {
	err := sdk.Compile(context.Background(), []byte("int main(void) { return undefined_thing; }\n"), filepath.Join(t.TempDir(), "job"))
	if err == nil || !strings.Contains(err.Error(), "undefined_thing") {
		t.Errorf("got %v, want an error quoting the compiler's message", err)
	}
}

func TestNoCompiler(t *testing.T) {
	t.Setenv("CC", "/nonexistent/cc")
	err := sdk.Compile(context.Background(), []byte("int main(void) { return 0; }\n"), filepath.Join(t.TempDir(), "job"))
	if !errors.Is(err, sdk.ErrNoCompiler) {
		t.Errorf("got %v, want ErrNoCompiler", err)
	}
}

func TestCompileHosted(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "hello")
	src := "#include <stdio.h>\nint main(void) { printf(\"hello %d\\n\", 42); return 0; }\n"
	if err := sdk.CompileHosted(context.Background(), []byte(src), bin); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin).Output()
	if err != nil || string(out) != "hello 42\n" {
		t.Errorf("got %q, %v, want %q, nil", out, err, "hello 42\n")
	}
}

// div128Job divides unsigned __int128 values, which the compiler turns into calls to
// libgcc's __udivti3 and __umodti3; volatile keeps it from folding them.
const div128Job = `#include "gridjob.h"
int main(void) {
	volatile unsigned __int128 a = ((unsigned __int128)0x0123456789abcdefull << 64) | 0xfedcba9876543210ull;
	volatile unsigned __int128 b = 1000000007ull;
	unsigned __int128 q = a / b, r = a % b;
	gj_print_u64((uint64_t)(q >> 64));
	gj_print_u64((uint64_t)q);
	gj_print_u64((uint64_t)r);
	return 0;
}
`

func TestCompileLinksLibgcc(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "div128")
	if err := sdk.Compile(context.Background(), []byte(div128Job), bin); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	// (0x0123456789abcdef<<64 | 0xfedcba9876543210) divmod 1000000007, by Python.
	if got, want := string(out), "81985528\n11853659987128082656\n619465712\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestCompileFileNamesSource checks that the compiler's messages name the user's file and
// that a source is compiled as C whatever its name.
func TestCompileFileNamesSource(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.WriteFile("broken.c", []byte("int main(void) {\n\treturn undefined_thing;\n}\n"), 0o644)
	err := sdk.CompileFile(context.Background(), "broken.c", "broken")
	if err == nil || !strings.Contains(err.Error(), "broken.c:2:") {
		t.Errorf("got %v, want the compiler's message at broken.c:2", err)
	}
	if err != nil && strings.Contains(err.Error(), "job.c") {
		t.Errorf("the message names the temporary copy: %v", err)
	}
	os.WriteFile("helper.h", []byte("#define ANSWER 42\n"), 0o644)
	os.WriteFile("job.txt", []byte("#include \"gridjob.h\"\n#include \"helper.h\"\nint main(void) { return ANSWER; }\n"), 0o644)
	if err := sdk.CompileFile(context.Background(), "job.txt", "job"); err != nil {
		t.Fatal(err)
	}
	err = exec.Command(filepath.Join(dir, "job")).Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Errorf("got %v, want exit status 42", err)
	}
}
