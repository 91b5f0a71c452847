// Package atomicfile replaces files whole or not at all.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with b, mode perm: a temporary file beside it (".NAME.tmp-*"), renamed
// over it, so a reader sees the old file or the new one, never part of either. With sync
// the file and then its directory are synced, so a system crash leaves one of the two as
// well; without, a crash may tear the new file, for callers that check what they read back
// (a batch's outputs, named by the CIDs in their outcomes).
func Write(path string, b []byte, perm os.FileMode, sync bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	err = tmp.Chmod(perm)       // CreateTemp's 0600 is for the temporary file
	if err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil && sync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil || !sync {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Leftovers removes the temporary files that Write calls for path interrupted by a crash
// left behind. Preconditions: no Write for path is under way (the caller holds its lock).
func Leftovers(path string) {
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*"))
	for _, f := range old {
		os.Remove(f)
	}
}
