//go:build !linux

package sandbox

// checkBinfmtSystem has nothing to check where there is no binfmt_misc.
func checkBinfmtSystem() error { return nil }
