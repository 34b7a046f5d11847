package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tagger-project/tagger/internal/rig"
)

// TestMultiNodeCluster proves what the multi-node rig promises: three nodes
// Ready with their own addresses; pods on every node get addresses from
// their node's pod CIDR and reach each other across nodes, a Service
// through kube-proxy and its DNS name through CoreDNS, also from the host
// network; a hostPath lands on its own node only; a node added with a
// startup taint registers with it; a node stopped and started comes back;
// and Stop leaves nothing behind.
func TestMultiNodeCluster(t *testing.T) {
	rig.RequireRoot(t)
	rig.RequireBins(t, append([]string{"registry"}, append(requiredBins, multiBins...)...)...)
	c := New(t, Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	reg := rig.NewRegistry(t, rig.RegistryOptions{Host: c.HostIP()})
	c.UsePlainHTTP(reg.Host())
	marker := "multinode-" + randomHex(4)
	PushRunnableImage(t, reg, "clustertest/web", "v1", marker)
	image := reg.Host() + "/clustertest/web:v1"

	nodes := c.Nodes()
	for _, n := range nodes {
		node, err := c.Client().CoreV1().Nodes().Get(ctx, n.Name(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := internalIP(node); got != n.IP() {
			t.Errorf("node %s: InternalIP %q, want %s", n.Name(), got, n.IP())
		}
	}

	web := webDeployment(image, marker, int32(len(nodes)))
	if _, err := c.Client().AppsV1().Deployments("default").Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client().CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: web.Spec.Selector.MatchLabels,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.waitDeploymentAvailable(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	pods, err := c.Client().CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	byNode := map[string]string{}
	for _, p := range pods.Items {
		n := c.Node(p.Spec.NodeName)
		_, cidr, _ := net.ParseCIDR(n.PodCIDR())
		if !cidr.Contains(net.ParseIP(p.Status.PodIP)) {
			t.Errorf("pod %s on %s has IP %s, outside the node's pod CIDR %s", p.Name, n.Name(), p.Status.PodIP, n.PodCIDR())
		}
		byNode[p.Spec.NodeName] = p.Status.PodIP
	}
	if len(byNode) != len(nodes) {
		t.Fatalf("web pods on %d nodes, want one on each of %d: %v", len(byNode), len(nodes), byNode)
	}

	// From every node: the Service by DNS name (pod and host network), and
	// the web pod of the next node directly.
	for i, n := range nodes {
		next := nodes[(i+1)%len(nodes)]
		urls := map[string]string{
			"dns":  "http://web.default.svc.cluster.local/",
			"pod":  "http://" + byNode[next.Name()] + ":8080/",
			"host": "http://web.default.svc.cluster.local/",
		}
		for kind, url := range urls {
			name := fmt.Sprintf("get-%s-%s", kind, n.Name())
			out := c.RunToCompletion(ctx, t, ClientPod(name, n.Name(), image, kind == "host", "-get", url))
			if !strings.Contains(out, "200 "+marker) {
				t.Errorf("%s on %s: GET %s: %q, want 200 %s", kind, n.Name(), url, out, marker)
			}
		}
	}

	// A hostPath lands on its node alone.
	touch := ClientPod("touch-"+nodes[0].Name(), nodes[0].Name(), image, false, "-touch", "/host/etc-containerd/probe")
	touch.Spec.Volumes = []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc/containerd"}}}}
	touch.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "host", MountPath: "/host/etc-containerd"}}
	c.RunToCompletion(ctx, t, touch)
	for i, n := range nodes {
		_, err := os.Stat(filepath.Join(filepath.Dir(n.ContainerdConfigPath()), "probe"))
		if got, want := err == nil, i == 0; got != want {
			t.Errorf("node %s: probe file present %v, want %v", n.Name(), got, want)
		}
	}
	if _, err := os.Stat("/etc/containerd/probe"); err == nil {
		t.Errorf("the hostPath write reached the machine's /etc/containerd")
	}

	// A node that joins with a startup taint registers with it.
	taint := corev1.Taint{Key: "example.test/not-ready", Effect: corev1.TaintEffectNoSchedule}
	added := c.AddNode(NodeOptions{Taints: []corev1.Taint{taint}})
	node, err := c.Client().CoreV1().Nodes().Get(ctx, added.Name(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Spec.Taints) == 0 || node.Spec.Taints[0].Key != taint.Key {
		t.Errorf("added node %s taints %v, want %s", added.Name(), node.Spec.Taints, taint.Key)
	}

	// Stopped, the node's pods are gone from it; started, it is Ready again.
	nodes[2].Stop()
	if pids := nodes[2].Kill("kubelet"); len(pids) > 0 {
		t.Errorf("kubelet still running on a stopped node: %v", pids)
	}
	nodes[2].Start()
	nodes[1].RestartContainerd()

	netns, bridge := nodes[0].netns, c.rnet.Bridge
	c.Stop()
	if t.Failed() {
		return
	}
	if left := c.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %s", strings.Join(left, "; "))
	}
	if _, err := os.Stat("/run/netns/" + netns); err == nil {
		t.Errorf("network namespace %s left", netns)
	}
	if _, err := os.Stat("/sys/class/net/" + bridge); err == nil {
		t.Errorf("bridge %s left", bridge)
	}
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// webDeployment is replicas waiter pods answering HTTP on 8080 with marker,
// one per node.
func webDeployment(image, marker string, replicas int32) *appsv1.Deployment {
	return SpreadDeployment("web", replicas, corev1.Container{
		Name: "web", Image: image, Args: []string{marker},
		Env:            []corev1.EnvVar{{Name: "WAITER_SERVE", Value: ":8080"}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
	})
}
