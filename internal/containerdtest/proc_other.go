//go:build !linux

package containerdtest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

// cleanLeftovers has nothing to do off Linux, where the rig does not run.
func (c *Containerd) cleanLeftovers() {}
