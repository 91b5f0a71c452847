// Package config reads gridnode's TOML configuration file into a command's flag set: the
// flags are the keys, spelled as on the command line (kebab-case), and nothing else is.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Source says where a flag's effective value came from.
type Source string

const (
	Default Source = "default"
	File    Source = "file"
	Flag    Source = "flag"
)

// ErrUnknownKey is wrapped by the error for a key that is not a flag.
var ErrUnknownKey = errors.New("unknown key")

// DefaultPath is the file read when none is named: $XDG_CONFIG_HOME/gridnode/config.toml,
// or ~/.config/gridnode/config.toml.
func DefaultPath() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "gridnode", "config.toml"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	return filepath.Join(home, ".config", "gridnode", "config.toml"), nil
}

// Apply sets the flags of fs that the command line left unset (fs has been parsed) from the
// TOML file at path, and returns where every flag's value came from. Every flag of fs except
// those in skip is a key; any other key is an error naming it with the file and line. A
// flag whose Value has IsRepeatable() returning true takes an array (one Set per element);
// the others take one string, number or boolean, which is given to Set as its text, so a
// file accepts exactly what the flag accepts ("256MiB", "10m", 4). A missing file is an
// error only when required; path "" reads nothing.
func Apply(fset *flag.FlagSet, path string, required bool, skip ...string) (map[string]Source, error) {
	src := make(map[string]Source)
	fset.VisitAll(func(f *flag.Flag) { src[f.Name] = Default })
	fset.Visit(func(f *flag.Flag) { src[f.Name] = Flag })
	for _, s := range skip {
		delete(src, s)
	}
	if path == "" {
		return src, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return src, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	vals, err := Parse(path, b, keys(fset, skip))
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(vals)) {
		if src[name] == Flag {
			continue // the command line wins
		}
		f := fset.Lookup(name)
		for _, v := range vals[name] {
			if err := f.Value.Set(v); err != nil {
				return nil, fmt.Errorf("config %s: %s = %q: %v", path, name, v, err)
			}
		}
		src[name] = File
	}
	return src, nil
}

// keys returns the flags of fs that are keys.
func keys(fset *flag.FlagSet, skip []string) map[string]bool {
	k := make(map[string]bool)
	fset.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(skip, f.Name) {
			k[f.Name] = repeatable(f)
		}
	})
	return k
}

func repeatable(f *flag.Flag) bool {
	r, ok := f.Value.(interface{ IsRepeatable() bool })
	return ok && r.IsRepeatable()
}

// Parse decodes the config file name holding b, whose keys are those of keys (true for a
// key that takes an array), and returns each key's values as flag text. Its errors start
// with "config NAME:LINE:" when the position is known.
func Parse(name string, b []byte, keys map[string]bool) (map[string][]string, error) {
	// A struct with one field per key lets the decoder report unknown keys with their
	// positions (DisallowUnknownFields); its fields are "any", so every value type arrives
	// and the flags judge them.
	names := slices.Sorted(maps.Keys(keys))
	fields := make([]reflect.StructField, len(names))
	for i, n := range names {
		fields[i] = reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeFor[any](), Tag: reflect.StructTag(`toml:"` + n + `"`)}
	}
	v := reflect.New(reflect.StructOf(fields))
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(v.Interface()); err != nil {
		return nil, decodeError(name, err)
	}
	out := make(map[string][]string)
	for i, n := range names {
		x := v.Elem().Field(i).Interface()
		if x == nil {
			continue
		}
		var err error
		if out[n], err = flagText(x, keys[n]); err != nil {
			return nil, fmt.Errorf("config %s: %s: %v", name, n, err)
		}
	}
	return out, nil
}

// decodeError words the decoder's errors with their positions.
func decodeError(name string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var errs []error
		for _, e := range strict.Errors {
			row, _ := e.Position()
			errs = append(errs, fmt.Errorf("config %s:%d: %w %q: no such flag", name, row, ErrUnknownKey, strings.Join(e.Key(), ".")))
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("config %s:%d:%d: %v", name, row, col, de)
	}
	return fmt.Errorf("config %s: %w", name, err)
}

// flagText turns a TOML value into the text its flag's Set takes.
func flagText(x any, many bool) ([]string, error) {
	if a, ok := x.([]any); ok {
		if !many {
			return nil, errors.New("takes one value, not an array")
		}
		out := make([]string, 0, len(a))
		for _, e := range a {
			s, err := scalarText(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := scalarText(x)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

func scalarText(x any) (string, error) {
	switch v := x.(type) {
	case string:
		return v, nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return "", fmt.Errorf("want a string, number or boolean, not %T", x)
}

// Setting is one key's effective value, as a line of a config file says it.
type Setting struct {
	Name   string
	Value  string // TOML: 4, true, "10m", ["a", "b"]
	Source Source
}

// Effective returns the settings of the keys in src (Apply's result), sorted by name: each
// flag's value as TOML, typed where its Value is a flag.Getter of a bool, number, string or
// []string, and a string otherwise.
func Effective(fset *flag.FlagSet, src map[string]Source) []Setting {
	var out []Setting
	for _, name := range slices.Sorted(maps.Keys(src)) {
		f := fset.Lookup(name)
		var v any = f.Value.String()
		if g, ok := f.Value.(flag.Getter); ok {
			switch x := g.Get().(type) {
			case bool, int, int64, uint, uint64, float64, string, []string:
				v = x
			}
		}
		if s, ok := v.([]string); ok && s == nil {
			v = []string{}
		}
		b, err := toml.Marshal(map[string]any{"v": v})
		val := strings.TrimSpace(strings.TrimPrefix(string(b), "v = "))
		if err != nil {
			val = strconv.Quote(f.Value.String())
		}
		out = append(out, Setting{Name: name, Value: val, Source: src[name]})
	}
	return out
}
