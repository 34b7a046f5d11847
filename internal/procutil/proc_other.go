//go:build !linux

package procutil

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
