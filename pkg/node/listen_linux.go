package node

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort sets SO_REUSEPORT on a socket before it binds: the old and the
// new agent pod of a rolling update (maxSurge, both on the node's network)
// listen on the same mirror, metrics and health ports at once, and the
// kernel spreads new connections over both.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// migrateReqSysctl is the per-network-namespace switch that makes Linux move
// the connections queued on a closing SO_REUSEPORT listener to another
// listener of the same group instead of resetting them.
const migrateReqSysctl = "/proc/sys/net/ipv4/tcp_migrate_req"
