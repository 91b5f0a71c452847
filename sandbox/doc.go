// Package sandbox validates static ELF jobs, patches an entry stub into them that enters
// SECCOMP_MODE_STRICT, and runs them with limits, reporting how each run ended.
package sandbox
