// Package sdk ships the C header for writing gridnode jobs and builds job sources with the
// machine's C compiler.
package sdk

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Header is gridjob.h, the single header a job includes.
//
//go:embed gridjob.h
var Header []byte

// ErrNoCompiler is returned when neither $CC, cc nor gcc can be found.
var ErrNoCompiler = errors.New("no C compiler found (set CC or install gcc: apt-get install -y gcc)")

// flags are the SDK's compiler flags: a static, freestanding, non-PIE executable with no
// libc, no stack protector (it reads %fs:0x28, and jobs have no TLS) and a
// non-executable stack.
var flags = []string{
	"-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector",
	"-fno-pie", "-no-pie", "-Wl,-z,noexecstack", "-O2",
}

// libs follow the sources: -nostdlib drops libgcc too, and the compiler emits calls into
// it for what the machine has no instruction for (128-bit division: __udivti3, __divti3,
// __umodti3). Its routines make no system calls.
var libs = []string{"-lgcc"}

// Flags returns the SDK's compiler flags; the sources go between them and Libs.
func Flags() []string { return append([]string(nil), flags...) }

// Libs returns the libraries linked after the sources.
func Libs() []string { return append([]string(nil), libs...) }

// Compile builds one C source into a static job at out with the machine's C compiler
// ($CC, else cc, else gcc). The source may #include "gridjob.h".
func Compile(ctx context.Context, src []byte, out string) error {
	return build(ctx, src, "", out, true)
}

// CompileFile is Compile for a file on disk, compiled where it is: the compiler's messages
// name srcPath, and its own #include "x.h" finds the headers beside it. It is compiled as
// C whatever its suffix.
func CompileFile(ctx context.Context, srcPath, out string) error {
	if err := build(ctx, nil, srcPath, out, true); err != nil {
		return fmt.Errorf("%s: %w", srcPath, err)
	}
	return nil
}

// CompileHosted builds an ordinary static program against the system libc
// (cc -static -O2). Such a program makes system calls the sandbox forbids; it exists to
// show that it is killed.
func CompileHosted(ctx context.Context, src []byte, out string) error {
	return build(ctx, src, "", out, false)
}

// build compiles srcPath, or src written to a temporary job.c when srcPath is "".
func build(ctx context.Context, src []byte, srcPath, out string, freestanding bool) error {
	cc, err := compiler()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "gridjob-")
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "gridjob.h"), Header, 0o644); err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	if srcPath == "" {
		srcPath = filepath.Join(dir, "job.c")
		if err := os.WriteFile(srcPath, src, 0o644); err != nil {
			return fmt.Errorf("compile: %w", err)
		}
	} else if _, err := os.Stat(srcPath); err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	args := append([]string(nil), cc[1:]...)
	if freestanding {
		args = append(args, flags...)
	} else {
		args = append(args, "-static", "-O2")
	}
	// "-x c" makes a source of any name C; "-x none" ends it before the libraries. A
	// leading "./" keeps a name that starts with '-' from being read as an option.
	if strings.HasPrefix(srcPath, "-") {
		srcPath = "." + string(filepath.Separator) + srcPath
	}
	args = append(args, "-I", dir, "-o", out, "-x", "c", srcPath, "-x", "none")
	if freestanding {
		args = append(args, libs...)
	}
	cmd := exec.CommandContext(ctx, cc[0], args...)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("compile: %w", ctx.Err())
		}
		return fmt.Errorf("compile: %s: %w\n%s", cc[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// compiler returns the compiler command: $CC split on spaces (it may be "ccache gcc"),
// else cc, else gcc.
func compiler() ([]string, error) {
	if f := strings.Fields(os.Getenv("CC")); len(f) > 0 {
		p, err := exec.LookPath(f[0])
		if err != nil {
			return nil, fmt.Errorf("%w: CC=%q: %v", ErrNoCompiler, os.Getenv("CC"), err)
		}
		f[0] = p
		return f, nil
	}
	for _, name := range []string{"cc", "gcc"} {
		if p, err := exec.LookPath(name); err == nil {
			return []string{p}, nil
		}
	}
	return nil, ErrNoCompiler
}
