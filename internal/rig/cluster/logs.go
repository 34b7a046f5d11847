package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ContainerLog returns what a container of pod wrote to stdout and stderr,
// one message per line, read from the kubelet's podLogsDir (the apiserver
// cannot proxy logs from this node). Every restart's log is included, oldest
// first.
func (c *Cluster) ContainerLog(pod *corev1.Pod, container string) (string, error) {
	logs := c.PodLogsDir()
	if n := c.Node(pod.Spec.NodeName); n != nil {
		logs = n.PodLogsDir()
	}
	dir := filepath.Join(logs, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID), container)
	files, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("no log of container %s in pod %s/%s under %s", container, pod.Namespace, pod.Name, dir)
	}
	restart := func(f string) int {
		n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".log"))
		return n
	}
	sort.Slice(files, func(i, j int) bool { return restart(files[i]) < restart(files[j]) })
	var b strings.Builder
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read container log: %w", err)
		}
		b.WriteString(parseCRILog(string(raw)))
	}
	return b.String(), nil
}

// parseCRILog turns CRI log lines ("<time> <stream> <P|F> <message>") into
// the messages, joining partial lines.
func parseCRILog(raw string) string {
	var b strings.Builder
	for _, line := range strings.Split(raw, "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) < 4 {
			continue
		}
		b.WriteString(f[3])
		if f[2] != "P" {
			b.WriteByte('\n')
		}
	}
	return b.String()
}
