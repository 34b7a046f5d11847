package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
)

type machine struct {
	NumCPU int    `json:"nproc"`
	CPU    string `json:"cpu"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Wrk    string `json:"wrk"`
}

func machineInfo(wrk string) machine {
	m := machine{NumCPU: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown", Kernel: "unknown", Wrk: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if out, err := exec.Command(wrk, "-v").CombinedOutput(); len(out) > 0 || err == nil {
		first, _, _ := strings.Cut(string(out), "\n")
		m.Wrk = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(first), "Copyright (C) 2012 Will Glozer"))
	}
	return m
}
