package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWrite: the file is replaced with the new bytes and mode, nothing else is left in its
// directory, and Leftovers removes what an interrupted Write would leave.
func TestWrite(t *testing.T) {
	for _, sync := range []bool{false, true} {
		dir := t.TempDir()
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := Write(p, []byte("new"), 0o644, sync); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(b) != "new" || fi.Mode().Perm() != 0o644 {
			t.Fatalf("sync %v: got %q (%v), mode %v", sync, b, err, fi.Mode())
		}
		left := filepath.Join(dir, ".f.tmp-123")
		os.WriteFile(left, nil, 0o600)
		Leftovers(p)
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("sync %v: %d files in the directory, want 1", sync, len(ents))
		}
	}
	if err := Write(filepath.Join(t.TempDir(), "no", "f"), nil, 0o644, true); err == nil {
		t.Fatal("wrote into a directory that does not exist")
	}
}
