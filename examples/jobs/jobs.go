// Package examplejobs holds example gridnode jobs written in C against the job SDK, and
// builds them.
package examplejobs

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gridnode/gridnode/sdk"
)

// sources are the examples. Each .c file starts with "//go:build ignore": without it
// the go command refuses C files in a package that does not use cgo.
//
//go:embed *.c
var sources embed.FS

// Names returns the example job names ("echo", "mandelbrot", "primes", "sha256"), sorted.
func Names() []string {
	files, _ := fs.Glob(sources, "*.c") // the pattern is valid, so this cannot fail
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, strings.TrimSuffix(f, ".c"))
	}
	slices.Sort(names)
	return names
}

// Source returns the C source of a named example.
func Source(name string) ([]byte, error) {
	if !slices.Contains(Names(), name) {
		return nil, fmt.Errorf("example job %q: %w (have %s)", name, fs.ErrNotExist, strings.Join(Names(), ", "))
	}
	return sources.ReadFile(name + ".c")
}

// Build compiles the named example into dir and returns the binary's path (dir/name).
func Build(ctx context.Context, name, dir string) (string, error) {
	src, err := Source(name)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	if err := sdk.Compile(ctx, src, out); err != nil {
		return "", fmt.Errorf("build example %s: %w", name, err)
	}
	return out, nil
}
