package main

import "syscall"

// childProcAttr puts a testnet node in its own process group, so a terminal's Ctrl-C reaches
// only the testnet, which stops the nodes in order; Pdeathsig kills them if it dies first.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
