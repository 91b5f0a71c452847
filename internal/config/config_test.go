package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// list is a repeatable flag, as gridnode run's --bootstrap.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }
func (l *list) Get() any           { return []string(*l) }
func (l *list) IsRepeatable() bool { return true }
func (l *list) joined() string     { return strings.Join(*l, " ") }

type flags struct {
	fs      *flag.FlagSet
	slots   *int
	load    *float64
	worker  *bool
	data    *string
	boot    list
	cfgPath *string
}

func newFlags() *flags {
	f := &flags{fs: flag.NewFlagSet("test", flag.ContinueOnError)}
	f.slots = f.fs.Int("slots", 0, "")
	f.load = f.fs.Float64("max-load", 0, "")
	f.worker = f.fs.Bool("worker", true, "")
	f.data = f.fs.String("data", "", "")
	f.fs.Var(&f.boot, "bootstrap", "")
	f.cfgPath = f.fs.String("config", "", "")
	return f
}

func write(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApply(t *testing.T) {
	file := `# a donor's file
slots = 4
max-load = 1.5
worker = false
bootstrap = ["/ip4/1.2.3.4/tcp/4011/p2p/A", "/ip4/5.6.7.8/tcp/4011/p2p/B"]
`
	tests := []struct {
		name   string
		args   []string
		slots  int
		load   float64
		worker bool
		boot   string
		src    map[string]Source
	}{
		{"file over default", nil, 4, 1.5, false, "/ip4/1.2.3.4/tcp/4011/p2p/A /ip4/5.6.7.8/tcp/4011/p2p/B",
			map[string]Source{"slots": File, "max-load": File, "worker": File, "bootstrap": File, "data": Default}},
		{"flag over file", []string{"-slots", "8", "-bootstrap", "/ip4/9.9.9.9/tcp/1/p2p/C", "-worker=true"}, 8, 1.5, true, "/ip4/9.9.9.9/tcp/1/p2p/C",
			map[string]Source{"slots": Flag, "max-load": File, "worker": Flag, "bootstrap": Flag, "data": Default}},
	}
	path := write(t, file)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFlags()
			if err := f.fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			src, err := Apply(f.fs, path, true, "config")
			if err != nil {
				t.Fatal(err)
			}
			if *f.slots != tc.slots || *f.load != tc.load || *f.worker != tc.worker || f.boot.joined() != tc.boot {
				t.Errorf("got slots %d, max-load %v, worker %v, bootstrap %q; want %d, %v, %v, %q",
					*f.slots, *f.load, *f.worker, f.boot.joined(), tc.slots, tc.load, tc.worker, tc.boot)
			}
			if len(src) != len(tc.src) {
				t.Errorf("got sources %v, want %v", src, tc.src)
			}
			for k, want := range tc.src {
				if src[k] != want {
					t.Errorf("source of %s: got %s, want %s", k, src[k], want)
				}
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // in the error
	}{
		{"unknown key", "slots = 2\nslotz = 3\n", []string{":2:", `unknown key "slotz"`}},
		{"two unknown keys", "a = 1\nslots = 2\nb = 3\n", []string{":1:", `"a"`, ":3:", `"b"`}},
		{"table", "[run]\nslots = 2\n", []string{`"run`}},
		{"config itself", "config = \"x\"\n", []string{`unknown key "config"`}},
		{"syntax", "slots = = 2\n", []string{":1:"}},
		{"array for one value", "slots = [1, 2]\n", []string{"slots", "not an array"}},
		{"bad value", "slots = \"many\"\n", []string{"slots", `"many"`}},
		{"bad bool", "worker = \"yes\"\n", []string{"worker"}},
		{"date", "data = 1979-05-27\n", []string{"data", "want a string"}},
		{"inline table", "data = {a = 1}\n", []string{"data", "want a string"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, tc.file)
			_, err := Apply(newFlags().fs, path, true, "config")
			if err == nil {
				t.Fatal("got no error")
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
		})
	}
	if _, err := Apply(newFlags().fs, write(t, "nope = 1\n"), true); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("got %v, want ErrUnknownKey", err)
	}
}

func TestApplyMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.toml")
	if _, err := Apply(newFlags().fs, missing, false); err != nil {
		t.Errorf("missing default file: got %v, want no error", err)
	}
	if _, err := Apply(newFlags().fs, missing, true); err == nil {
		t.Error("missing explicit file: got no error, want one")
	}
	if _, err := Apply(newFlags().fs, "", true); err != nil {
		t.Errorf("no file: got %v, want no error", err)
	}
}

func TestEffective(t *testing.T) {
	f := newFlags()
	f.fs.Parse([]string{"-data", `/tmp/a "b"`})
	src, err := Apply(f.fs, write(t, "slots = 3\nbootstrap = [\"x\"]\n"), true, "config")
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]Setting)
	for _, s := range Effective(f.fs, src) {
		got[s.Name] = s
	}
	want := map[string]Setting{
		"slots":     {"slots", "3", File},
		"bootstrap": {"bootstrap", `['x']`, File},
		"data":      {"data", `'/tmp/a "b"'`, Flag},
		"worker":    {"worker", "true", Default},
		"max-load":  {"max-load", "0.0", Default},
	}
	if len(got) != len(want) {
		t.Errorf("got %d settings, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("got %+v, want %+v", got[k], w)
		}
	}
	// What Effective prints reads back as the same configuration.
	var b strings.Builder
	for _, s := range got {
		b.WriteString(s.Name + " = " + s.Value + "\n")
	}
	g := newFlags()
	if _, err := Apply(g.fs, write(t, b.String()), true, "config"); err != nil {
		t.Fatalf("reading back %q: %v", b.String(), err)
	}
	if *g.slots != 3 || *g.data != `/tmp/a "b"` || g.boot.joined() != "x" {
		t.Errorf("read back slots %d, data %q, bootstrap %q", *g.slots, *g.data, g.boot.joined())
	}
}

// FuzzParse: a config file is untrusted text; Parse must not panic, and what it accepts
// names only known keys.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"slots = 4\n", "bootstrap = [\"a\", \"b\"]\n", "max-load = 1.5\nworker = false\n",
		"[t]\nx = 1\n", "slots = [1]\n", "a.b = 1\n", "\"slots\" = 1\n", "slots = 1979-05-27\n",
		"bootstrap = [[1]]\n", "data = '''x\ny'''\n",
	} {
		f.Add([]byte(s))
	}
	keys := map[string]bool{"slots": false, "max-load": false, "worker": false, "data": false, "bootstrap": true}
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, err := Parse("f", b, keys)
		if err != nil {
			return
		}
		for k, v := range vals {
			many, ok := keys[k]
			if !ok {
				t.Fatalf("accepted unknown key %q", k)
			}
			if !many && len(v) != 1 {
				t.Fatalf("key %q: %d values", k, len(v))
			}
		}
	})
}
