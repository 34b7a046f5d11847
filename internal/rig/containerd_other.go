//go:build !linux

package rig

// cleanLeftovers has nothing to do off Linux, where the rig does not run.
func (c *Containerd) cleanLeftovers() {}
