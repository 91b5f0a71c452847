package protocol

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gridnode/gridnode/sandbox"
)

// limitsFields returns the wire Limits' fields, looked up by name; TestLimitsWire checks
// that every sandbox limit has one. (A function: the descriptors exist only after the
// generated code's init.)
func limitsFields() protoreflect.FieldDescriptors {
	return (*Limits)(nil).ProtoReflect().Descriptor().Fields()
}

// WireLimits is the wire form of l: each limit in the field of its name.
func WireLimits(l sandbox.Limits) *Limits {
	m := new(Limits)
	r := m.ProtoReflect()
	l.Wire(func(name string, v uint64) {
		if fd := limitsFields().ByName(protoreflect.Name(name)); fd != nil {
			r.Set(fd, protoreflect.ValueOfUint64(v))
		}
	})
	return m
}

// Sandbox is the inverse of WireLimits; a nil m gives unset limits.
func (m *Limits) Sandbox() sandbox.Limits {
	r := m.ProtoReflect()
	return sandbox.LimitsFromWire(func(name string) uint64 {
		if m == nil {
			return 0
		}
		if fd := limitsFields().ByName(protoreflect.Name(name)); fd != nil {
			return r.Get(fd).Uint()
		}
		return 0
	})
}
