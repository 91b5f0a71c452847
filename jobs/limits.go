package jobs

import (
	"encoding/binary"
	"fmt"

	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// minLimits returns the smaller of a and b field by field.
func minLimits(a, b sandbox.Limits) sandbox.Limits {
	return sandbox.Limits{
		CPU: min(a.CPU, b.CPU), Wall: min(a.Wall, b.Wall), Memory: min(a.Memory, b.Memory),
		Stack: min(a.Stack, b.Stack), MaxOutput: min(a.MaxOutput, b.MaxOutput), MaxBinary: min(a.MaxBinary, b.MaxBinary),
	}
}

func limitsToProto(l sandbox.Limits) *protocol.Limits {
	return &protocol.Limits{
		CpuMs:  protocol.ToMillis(l.CPU),
		WallMs: protocol.ToMillis(l.Wall),
		Memory: uint64(max(l.Memory, 0)),
		Stack:  uint64(max(l.Stack, 0)),
		Output: uint64(max(l.MaxOutput, 0)),
		Binary: uint64(max(l.MaxBinary, 0)),
	}
}

func limitsFromProto(m *protocol.Limits) sandbox.Limits {
	return sandbox.Limits{
		CPU:       protocol.FromMillis(m.GetCpuMs()),
		Wall:      protocol.FromMillis(m.GetWallMs()),
		Memory:    protocol.SatInt64(m.GetMemory()),
		Stack:     protocol.SatInt64(m.GetStack()),
		MaxOutput: protocol.SatInt64(m.GetOutput()),
		MaxBinary: protocol.SatInt64(m.GetBinary()),
	}
}

// exceeds returns an ErrLimits error naming the first limit in want above have, comparing
// on the wire's units so both sides agree.
func exceeds(want, have sandbox.Limits) error {
	w, h := limitsToProto(want), limitsToProto(have)
	for _, f := range []struct {
		name       string
		want, have uint64
	}{
		{"cpu_ms", w.CpuMs, h.CpuMs},
		{"wall_ms", w.WallMs, h.WallMs},
		{"memory", w.Memory, h.Memory},
		{"stack", w.Stack, h.Stack},
		{"output", w.Output, h.Output},
		{"binary", w.Binary, h.Binary},
	} {
		if f.want > f.have {
			return protocol.Errorf(protocol.Code_LIMITS, "%s %d above %d", f.name, f.want, f.have)
		}
	}
	return nil
}

// offerLimits returns the limits an offer accepts.
func offerLimits(o *protocol.Offer) sandbox.Limits {
	return sandbox.Limits{CPU: o.MaxCPU, Wall: o.MaxWall, Memory: o.MaxMemory, Stack: o.MaxStack, MaxOutput: o.MaxOutput, MaxBinary: o.MaxBinary}
}

// archOf returns the platform an ELF file is for, from its e_machine; anything else is
// taken to be for linux/amd64 (the sandbox will reject it).
func archOf(elf []byte) string {
	if len(elf) >= 20 && string(elf[:4]) == "\x7fELF" {
		switch binary.LittleEndian.Uint16(elf[18:20]) {
		case 183:
			return protocol.ArchLinuxARM64
		}
	}
	return protocol.ArchLinuxAMD64
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
