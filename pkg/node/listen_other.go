//go:build !linux

package node

import "syscall"

// reusePort is a no-op off Linux: the node agent runs on Linux nodes.
func reusePort(_, _ string, _ syscall.RawConn) error { return nil }

const migrateReqSysctl = ""
