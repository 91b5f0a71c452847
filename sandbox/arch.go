package sandbox

import (
	"bytes"
	"encoding/binary"

	"github.com/gridnode/gridnode/internal/platform"
)

// Architectures, as in offers, requests and the DHT's worker namespaces.
const (
	ArchAMD64 = "linux/amd64"
	ArchARM64 = "linux/arm64"
)

// Arches returns the architectures this machine's sandbox runs jobs for: linux/amd64 on a
// linux/amd64 machine (the stub and strict seccomp's syscall numbers are x86-64's), none
// anywhere else.
func Arches() []string {
	if platform.Current == ArchAMD64 {
		return []string{ArchAMD64}
	}
	return nil
}

// ArchOf returns the architecture an ELF executable is for, from its e_machine. Files that
// are not 64-bit little-endian ELF, or are for a machine without a name here, are rejected
// (a RejectError) with the reason Validate would give.
func ArchOf(bin []byte) (string, error) {
	if len(bin) < ehdrSize || !bytes.HasPrefix(bin, []byte("\x7fELF")) || bin[4] != classELF64 || bin[5] != dataLSB {
		if err := Validate(bin, Limits{MaxBinary: int64(len(bin))}); err != nil {
			return "", err
		}
		return "", reject("not a 64-bit little-endian ELF file")
	}
	switch m := binary.LittleEndian.Uint16(bin[18:]); m {
	case emX86_64:
		return ArchAMD64, nil
	case emAArch64:
		return ArchARM64, nil
	default:
		return "", reject("ELF for machine %d, which no gridnode sandbox runs", m)
	}
}
