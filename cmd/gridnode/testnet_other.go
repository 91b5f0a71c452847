//go:build !linux

package main

import "syscall"

// childProcAttr puts a testnet node in its own process group. Without Pdeathsig (Linux
// only), nodes outlive a testnet that is killed with SIGKILL.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
