package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
)

// listenShared binds addr with SO_REUSEPORT (see reusePort).
func listenShared(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	return lc.Listen(context.Background(), "tcp", addr)
}

// ephemeral reports whether addr asks for a port chosen at bind time
// ("127.0.0.1:0"): such a mirror is bound in New, so that hosts.toml can
// name its port; no other agent can share it anyway.
func ephemeral(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}

// migrateReq reads net.ipv4.tcp_migrate_req of the agent's network
// namespace (the node's: the agent runs with hostNetwork): "1" means a
// closing agent's queued connections move to the next agent's listener.
func migrateReq() (bool, error) {
	if migrateReqSysctl == "" {
		return false, nil
	}
	b, err := os.ReadFile(migrateReqSysctl)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", migrateReqSysctl, err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}
