package main

import (
	"fmt"
	"net"
	"os"
)

func logf(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }

// freePort asks the kernel for a free loopback port. Another process can
// take it before the controller binds it; startController retries then.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
