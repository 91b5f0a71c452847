package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gridnodeIn runs the built binary with XDG_CONFIG_HOME=cfgHome and returns its stdout,
// stderr and exit status.
func gridnodeIn(t *testing.T, cfgHome string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(gridnodeBinary(t), args...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+cfgHome)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// settings parses `gridnode config` output: key -> "value  # source".
func settings(out string) map[string][2]string {
	m := make(map[string][2]string)
	for _, l := range strings.Split(out, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		kv, src, _ := strings.Cut(l, "#")
		k, v, _ := strings.Cut(kv, "=")
		m[strings.TrimSpace(k)] = [2]string{strings.TrimSpace(v), strings.TrimSpace(src)}
	}
	return m
}

// TestConfigPrecedence runs `gridnode config` against the default file and an explicit one:
// a flag beats the file, the file beats the default, and each value says where it came from.
func TestConfigPrecedence(t *testing.T) {
	home := t.TempDir()
	def := filepath.Join(home, "gridnode", "config.toml")
	os.MkdirAll(filepath.Dir(def), 0o700)
	os.WriteFile(def, []byte("slots = 3\nmem = \"512MiB\"\nbootstrap = [\"/ip4/192.0.2.1/tcp/4011/p2p/A\"]\n"), 0o600)
	other := filepath.Join(t.TempDir(), "other.toml")
	os.WriteFile(other, []byte("slots = 7\n"), 0o600)

	tests := []struct {
		name string
		args []string
		file string // on the first line
		want map[string][2]string
	}{
		{"default file", nil, def, map[string][2]string{
			"slots": {"3", "file"}, "mem": {"'512MiB'", "file"}, "bootstrap": {"['/ip4/192.0.2.1/tcp/4011/p2p/A']", "file"},
			"worker": {"true", "default"}, "max-load": {"0.0", "default"}}},
		{"flag over file", []string{"--slots", "5", "--worker=false", "--bootstrap", "/ip4/192.0.2.2/tcp/1/p2p/B"}, def, map[string][2]string{
			"slots": {"5", "flag"}, "mem": {"'512MiB'", "file"}, "bootstrap": {"['/ip4/192.0.2.2/tcp/1/p2p/B']", "flag"},
			"worker": {"false", "flag"}}},
		{"explicit file", []string{"--config", other}, other, map[string][2]string{
			"slots": {"7", "file"}, "mem": {"''", "default"}}},
		{"no file", []string{"--config="}, "none", map[string][2]string{
			"slots": {"0", "default"}, "mem": {"''", "default"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := gridnodeIn(t, home, append([]string{"config"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr: %s", code, stderr)
			}
			if first, _, _ := strings.Cut(out, "\n"); !strings.Contains(first, tc.file) {
				t.Errorf("first line %q, want it to name %s", first, tc.file)
			}
			got := settings(out)
			for k, w := range tc.want {
				if got[k] != w {
					t.Errorf("%s: got %q, want %q", k, got[k], w)
				}
			}
			if _, ok := got["config"]; ok {
				t.Error("the config flag itself is listed as a key")
			}
		})
	}

	// The missing default file is fine; a missing explicit one is not.
	if _, stderr, code := gridnodeIn(t, t.TempDir(), "config"); code != 0 {
		t.Errorf("no default file: exit %d, want 0; stderr: %s", code, stderr)
	}
	if _, stderr, code := gridnodeIn(t, home, "config", "--config", filepath.Join(home, "nope.toml")); code != 125 || !strings.Contains(stderr, "nope.toml") {
		t.Errorf("missing --config file: exit %d, stderr %q; want 125 naming the file", code, stderr)
	}
}

// TestConfigUnknownKey checks that a key that is no flag of gridnode run fails, naming the
// key, the file and the line, in `gridnode config` and in `gridnode run` (before anything
// starts), and that run reads its values through the flags' own checks.
func TestConfigUnknownKey(t *testing.T) {
	home := t.TempDir()
	bad := filepath.Join(home, "bad.toml")
	os.WriteFile(bad, []byte("slots = 2\n\nmax-laod = 3\n"), 0o600)
	neg := filepath.Join(home, "neg.toml")
	os.WriteFile(neg, []byte("slots = -1\n"), 0o600)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"config", []string{"config", "--config", bad}, []string{bad + ":3:", `unknown key "max-laod"`}},
		{"run", []string{"run", "--config", bad}, []string{bad + ":3:", `unknown key "max-laod"`}},
		{"run reads the file", []string{"run", "--config", neg, "--data", filepath.Join(home, "data")}, []string{"must not be negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := gridnodeIn(t, home, tc.args...)
			if code != 125 {
				t.Errorf("exit %d, want 125", code)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q, want it to contain %q", stderr, w)
				}
			}
		})
	}
}
