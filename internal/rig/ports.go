package rig

import (
	"fmt"
	"net"
)

// FreePorts asks the kernel for n distinct free loopback ports. Another
// process can take one before the component binds it: callers retry the
// start with new ports when that happens.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreeAddr is a loopback "127.0.0.1:port" that was free a moment ago, for
// a test to hand to a server it starts; it fails the test otherwise.
func FreeAddr(t interface {
	Helper()
	Fatalf(format string, args ...any)
}) string {
	t.Helper()
	ps, err := FreePorts(1)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ps[0])
}
