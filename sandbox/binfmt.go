package sandbox

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The kernel tries binfmt_misc handlers (qemu-user, box64, wine, java…) before its ELF
// loader: a handler whose magic matches a job's header would start the handler's
// interpreter on the job instead of the kernel entering the stub. So jobs are refused while
// any enabled handler could match a job header (fs/binfmt_misc.c: check_file).

// BinfmtDir is where binfmt_misc is mounted.
const BinfmtDir = "/proc/sys/fs/binfmt_misc"

// ErrBinfmt is returned (wrapped, naming the handlers) while binfmt_misc handlers that
// could take over a job are enabled.
var ErrBinfmt = errors.New("an enabled binfmt_misc handler would run jobs instead of the kernel's ELF loader")

// binfmtEntry is one registered handler, as its file in BinfmtDir shows it.
type binfmtEntry struct {
	name        string
	enabled     bool
	interpreter string
	extension   string // for extension handlers; magic handlers have none
	offset      int
	magic, mask []byte // mask nil means all ones
}

// parseBinfmtEntry parses a handler's file (bm_entry_read's format).
func parseBinfmtEntry(name, text string) (binfmtEntry, error) {
	e := binfmtEntry{name: name}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		var err error
		switch k {
		case "enabled":
			e.enabled = true
		case "interpreter":
			e.interpreter = v
		case "extension":
			e.extension = strings.TrimPrefix(v, ".")
		case "offset":
			e.offset, err = strconv.Atoi(v)
		case "magic":
			e.magic, err = hex.DecodeString(v)
		case "mask":
			e.mask, err = hex.DecodeString(v)
		}
		if err != nil {
			return e, fmt.Errorf("binfmt_misc entry %s: %s: %w", name, k, err)
		}
	}
	if e.mask != nil && len(e.mask) != len(e.magic) {
		return e, fmt.Errorf("binfmt_misc entry %s: mask and magic differ in length", name)
	}
	if e.extension == "" && (len(e.magic) == 0 || e.offset < 0 || e.offset+len(e.magic) > 128) {
		return e, fmt.Errorf("binfmt_misc entry %s: no usable magic", name)
	}
	return e, nil
}

// jobHeaderBits is what validation fixes in the first bytes of every job it accepts: value and
// which bits of it are fixed. Every other byte is the job author's to choose.
func jobHeaderBits(typ uint16) (val, fixed [128]byte) {
	set := func(off int, b ...byte) {
		copy(val[off:], b)
		for i := range b {
			fixed[off+i] = 0xff
		}
	}
	set(0, 0x7f, 'E', 'L', 'F', classELF64, dataLSB, 1)
	set(16, byte(typ), byte(typ>>8), emX86_64, 0)
	set(54, phdrSize, 0)
	return val, fixed
}

// couldMatchJob reports whether e, if enabled, matches some header that validation accepts.
// Extension handlers never match: jobs are exec'd as /proc/self/fd/N, which has no '.'.
func (e binfmtEntry) couldMatchJob() bool {
	if !e.enabled || e.extension != "" {
		return false
	}
	for _, typ := range []uint16{etExec, etDyn} {
		val, fixed := jobHeaderBits(typ)
		ok := true
		for j, m := range e.magic {
			mask := byte(0xff)
			if e.mask != nil {
				mask = e.mask[j]
			}
			i := e.offset + j
			if (val[i]^m)&mask&fixed[i] != 0 {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// readBinfmt lists the enabled handlers in dir that could take over a job. A dir that does
// not exist (binfmt_misc not mounted) has none; so does a globally disabled binfmt_misc.
func readBinfmt(dir string) ([]binfmtEntry, error) {
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read binfmt_misc status: %w", err)
	}
	if bytes.HasPrefix(status, []byte("disabled")) {
		return nil, nil
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list binfmt_misc handlers: %w", err)
	}
	var bad []binfmtEntry
	for _, de := range des {
		if n := de.Name(); n == "status" || n == "register" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read binfmt_misc handler: %w", err)
		}
		e, err := parseBinfmtEntry(de.Name(), string(b))
		if err != nil {
			return nil, err
		}
		if e.couldMatchJob() {
			bad = append(bad, e)
		}
	}
	return bad, nil
}

// CheckBinfmt returns nil if no enabled binfmt_misc handler could run a job in place of the
// kernel's ELF loader, and otherwise an error that names the handlers and how to disable
// them. Workers call it at start; Runner.Run refuses jobs while it fails.
func CheckBinfmt() error { return checkBinfmtSystem() }

func checkBinfmtDir(dir string) error {
	bad, err := readBinfmt(dir)
	if err != nil {
		return err
	}
	if len(bad) == 0 {
		return nil
	}
	var names []string
	for _, e := range bad {
		names = append(names, fmt.Sprintf("%s (%s)", e.name, e.interpreter))
	}
	return fmt.Errorf("%w: %s; jobs are refused until it is disabled (echo 0 > %s/NAME) or removed", ErrBinfmt, strings.Join(names, ", "), dir)
}

// binfmtCache re-reads the handlers at most once per binfmtTTL, so a check per job costs
// nothing measurable while a handler registered later is still seen within a second.
type binfmtCache struct {
	mu   sync.Mutex
	at   time.Time
	err  error
	dir  string // a directory to read instead of the system's instances (tests)
	once bool
}

const binfmtTTL = time.Second

// jobBinfmt is the check Runner.Run makes before every job.
var jobBinfmt binfmtCache

func (c *binfmtCache) check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.once && time.Since(c.at) < binfmtTTL {
		return c.err
	}
	if c.dir == "" {
		c.err = checkBinfmtSystem()
	} else {
		c.err = checkBinfmtDir(c.dir)
	}
	c.at, c.once = time.Now(), true
	return c.err
}
