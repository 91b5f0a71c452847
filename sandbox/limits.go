package sandbox

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"
)

// Limits bound one run; they are the job contract's one limits type, used by the CLI, the
// submitter, the signed offer and the wire (under each field's limit tag), the worker and
// the sandbox. A zero field is unset: the layer that runs the job fills it, once, with
// Or (the sandbox's Run with DefaultLimits, a worker with its policy's defaults). Negative
// fields are invalid (Check). A new limit is one field here, with its tag, and a field of
// the same name in the wire's Limits message.
type Limits struct {
	CPU       time.Duration `limit:"cpu_ms"`  // CPU time; enforced by RLIMIT_CPU in whole seconds, rounded up
	Wall      time.Duration `limit:"wall_ms"` // wall-clock time from start to exit
	Memory    int64         `limit:"memory"`  // bytes: page-rounded segments + stub + stack, checked before exec; RLIMIT_AS
	Stack     int64         `limit:"stack"`   // RLIMIT_STACK in bytes; unset, at most a quarter of Memory
	MaxOutput int64         `limit:"output"`  // bytes of stdout kept; more ends the run with StatusOutputLimit
	MaxBinary int64         `limit:"binary"`  // size of the ELF file
}

// DefaultLimits returns the limits a worker enforces unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{
		CPU:       10 * time.Minute,
		Wall:      30 * time.Minute,
		Memory:    256 << 20,
		Stack:     8 << 20,
		MaxOutput: 16 << 20,
		MaxBinary: 64 << 20,
	}
}

// limitField is one field of Limits: its wire name and whether it is a duration (carried
// in milliseconds) or a byte count.
type limitField struct {
	name     string
	index    int
	duration bool
}

// limitFields describes Limits, from its struct tags.
var limitFields = func() []limitField {
	t := reflect.TypeFor[Limits]()
	fs := make([]limitField, t.NumField())
	for i := range fs {
		f := t.Field(i)
		fs[i] = limitField{name: f.Tag.Get("limit"), index: i, duration: f.Type == reflect.TypeFor[time.Duration]()}
		if fs[i].name == "" || f.Type.Kind() != reflect.Int64 {
			panic("sandbox: Limits." + f.Name + " needs a limit tag and an int64 type")
		}
	}
	return fs
}()

// ptr returns a pointer to field f of l.
func (f limitField) ptr(l *Limits) *int64 {
	return (*int64)(reflect.ValueOf(l).Elem().Field(f.index).Addr().UnsafePointer())
}

// wire converts a value of f to the wire's unit: milliseconds, rounded up, for durations.
func (f limitField) wire(v int64) uint64 {
	switch {
	case v <= 0:
		return 0
	case f.duration:
		return uint64((v + int64(time.Millisecond) - 1) / int64(time.Millisecond))
	}
	return uint64(v)
}

// fromWire is the inverse of wire, saturating instead of overflowing.
func (f limitField) fromWire(u uint64) int64 {
	if f.duration {
		if u > math.MaxInt64/uint64(time.Millisecond) {
			return math.MaxInt64
		}
		return int64(u) * int64(time.Millisecond)
	}
	return int64(min(u, math.MaxInt64))
}

// format shows a value of f for people.
func (f limitField) format(v int64) string {
	if f.duration {
		return time.Duration(v).String()
	}
	return strconv.FormatInt(v, 10) + " bytes"
}

// LimitNames returns the wire names of the limits, in field order.
func LimitNames() []string {
	names := make([]string, len(limitFields))
	for i, f := range limitFields {
		names[i] = f.name
	}
	return names
}

// Wire calls set with each limit's wire name and value in the wire's unit (milliseconds
// for durations, rounded up; bytes otherwise); unset limits give 0.
func (l Limits) Wire(set func(name string, v uint64)) {
	for _, f := range limitFields {
		set(f.name, f.wire(*f.ptr(&l)))
	}
}

// LimitsFromWire builds Limits from wire values: get returns the value of a wire name.
func LimitsFromWire(get func(name string) uint64) Limits {
	var l Limits
	for _, f := range limitFields {
		*f.ptr(&l) = f.fromWire(get(f.name))
	}
	return l
}

// Check reports a negative limit.
func (l Limits) Check() error {
	for _, f := range limitFields {
		if v := *f.ptr(&l); v < 0 {
			return fmt.Errorf("limit %s is negative (%s)", f.name, f.format(v))
		}
	}
	return nil
}

// Or returns l with its unset fields taken from d. An unset Stack becomes the smaller of
// d.Stack and a quarter of the memory limit, so that small memory limits still work.
func (l Limits) Or(d Limits) Limits {
	stackSet := l.Stack > 0
	for _, f := range limitFields {
		if p := f.ptr(&l); *p <= 0 {
			*p = *f.ptr(&d)
		}
	}
	if !stackSet {
		l.Stack = min(d.Stack, l.Memory/4)
	}
	return l
}

// Min returns the smaller of l and o, field by field; an unset field is not smaller.
func (l Limits) Min(o Limits) Limits {
	for _, f := range limitFields {
		if p, q := f.ptr(&l), *f.ptr(&o); *p <= 0 || (q > 0 && q < *p) {
			*p = q
		}
	}
	return l
}

// Exceeds returns an error naming the first limit set in l above the same limit in max,
// compared in the wire's units so that both ends of the wire agree; nil if none is.
func (l Limits) Exceeds(max Limits) error {
	for _, f := range limitFields {
		v, m := *f.ptr(&l), *f.ptr(&max)
		if f.wire(v) > f.wire(m) {
			return fmt.Errorf("%s %s above %s", f.name, f.format(v), f.format(m))
		}
	}
	return nil
}

// withDefaults fills unset fields from DefaultLimits.
func (l Limits) withDefaults() Limits { return l.Or(DefaultLimits()) }
