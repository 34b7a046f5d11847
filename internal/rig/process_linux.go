package rig

import "syscall"

// sysProcAttr has the kernel kill the process if the test binary dies
// without running its cleanups (e.g. on a test timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
