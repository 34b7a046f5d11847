package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procs samples CPU time of this process, the registry and the machine.
type procs struct{ registry int }

type cpuSample struct {
	self, registry time.Duration
	busy           time.Duration // all CPUs, from /proc/stat
}

// cpuUse is the CPU time used during one measurement.
type cpuUse struct {
	SelfS     float64 `json:"self_s"`     // this process: mirror / ceiling and the blob client
	RegistryS float64 `json:"registry_s"` // the distribution registry process
	WrkS      float64 `json:"wrk_s"`      // the load generator
	// OtherCores is the average number of cores busy with anything else
	// during the run (other engineers' builds): the noise.
	OtherCores float64 `json:"other_cores"`
}

// serverUSPerReq is server-side CPU (this process and the registry) per request.
func (u cpuUse) serverUSPerReq(n int64) float64 {
	return (u.SelfS + u.RegistryS) * 1e6 / float64(max(n, 1))
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 100

func (p *procs) sample() cpuSample {
	var s cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if p.registry > 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.registry)); err == nil {
			// Fields after the parenthesised command: state is field 3,
			// utime 14, stime 15.
			if i := bytes.LastIndexByte(b, ')'); i > 0 {
				f := strings.Fields(string(b[i+1:]))
				if len(f) > 12 {
					ut, _ := strconv.ParseInt(f[11], 10, 64)
					st, _ := strconv.ParseInt(f[12], 10, 64)
					s.registry = time.Duration(ut+st) * time.Second / clockTick
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := bytes.Cut(b, []byte("\n"))
		f := strings.Fields(string(line))
		var busy int64
		// cpu user nice system idle iowait irq softirq steal ...
		for i := 1; i < len(f) && i <= 8; i++ {
			if i == 4 || i == 5 { // idle, iowait
				continue
			}
			v, _ := strconv.ParseInt(f[i], 10, 64)
			busy += v
		}
		s.busy = time.Duration(busy) * time.Second / clockTick
	}
	return s
}

func (p *procs) diff(a, b cpuSample, wrk, wall time.Duration) cpuUse {
	u := cpuUse{
		SelfS:     (b.self - a.self).Seconds(),
		RegistryS: (b.registry - a.registry).Seconds(),
		WrkS:      wrk.Seconds(),
	}
	other := (b.busy - a.busy).Seconds() - u.SelfS - u.RegistryS - u.WrkS
	if wall > 0 {
		u.OtherCores = max(other, 0) / wall.Seconds()
	}
	return u
}

// childPID finds the pid of our child process running bin.
func childPID(bin string) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(s)
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err == nil && string(bytes.SplitN(cmdline, []byte{0}, 2)[0]) == bin {
				return pid
			}
		}
	}
	return 0
}
