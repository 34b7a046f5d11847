package s3test

import "syscall"

// sysProcAttr has the kernel kill weed if the test binary dies without
// running its cleanups (e.g. on a test timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
