package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// nodeImage is an image every node imports at start (it is never pulled).
type nodeImage struct {
	ref, archive string
}

// corednsImage is the name the rig imports CoreDNS under.
const corednsImage = "tagger.test/clustertest/coredns:1"

// multiBins are the binaries a multi-node cluster needs on top of requiredBins.
var multiBins = []string{"kube-proxy", "coredns"}

// startMulti starts a multi-node cluster: the host side of its network
// (bridge with the host's address, filter chain), the control plane on the
// bridge's address, Options.Nodes nodes in parallel, then CoreDNS and the
// default StorageClass.
func (c *Cluster) startMulti() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for _, tool := range []string{"nsenter", "unshare", "mount", "ip", "iptables"} {
		if lookPath(tool) == "" {
			stopTest(c.t, "clustertest: no %s on PATH: run hack/ci-deps.sh", tool)
		}
	}
	if err := c.claimHost(); err != nil {
		return err
	}
	if err := c.prepareMachinePaths(); err != nil {
		return err
	}
	if err := c.writePKI(); err != nil {
		return err
	}
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	if err := c.startAPIServer(ctx); err != nil {
		return err
	}
	if err := c.startControllers(); err != nil {
		return err
	}
	if err := c.prepareNodeImages(); err != nil {
		return err
	}
	nodes := make([]*Node, c.opts.Nodes)
	for i := range nodes {
		n, err := c.newNode(NodeOptions{})
		if err != nil {
			return err
		}
		nodes[i] = n
	}
	// Namespaces one at a time (routes between nodes), the rest in parallel.
	for _, n := range nodes {
		if err := n.createNamespaces(); err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range nodes {
		g.Go(func() error { return n.start(gctx) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := c.waitDefaultServiceAccount(ctx); err != nil {
		return err
	}
	return c.installAddons(ctx)
}

// newNode registers the cluster's next node: its name, directories, client
// certificate and kubeconfig. Nothing runs yet.
func (c *Cluster) newNode(o NodeOptions) (*Node, error) {
	c.mu.Lock()
	i := len(c.nodes)
	c.mu.Unlock()
	if i >= maxNodes {
		return nil, fmt.Errorf("a cluster has at most %d nodes", maxNodes)
	}
	name := fmt.Sprintf("node-%d", i+1)
	n := &Node{
		c: c, i: i, name: name, opts: o,
		dir:     filepath.Join(c.dir, "nodes", name),
		run:     filepath.Join(c.runDir, fmt.Sprintf("n%d", i+1)),
		netns:   fmt.Sprintf("tgct-%s-%d", c.id, i+1),
		mntns:   filepath.Join(c.runDir, "ns", name),
		cgroups: cgroupRoot{Name: fmt.Sprintf("/tagger-ct-%s-%d", c.id, i+1)},
	}
	for _, d := range []string{n.dir, n.run} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	kc := "node-" + name
	if _, err := c.pki.client(kc, "system:node:"+name, "system:nodes"); err != nil {
		return nil, err
	}
	path := filepath.Join(c.pki.dir, kc+".kubeconfig")
	if err := c.writeKubeconfig(kc, path); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.kubeconfigs[kc] = path
	c.nodes = append(c.nodes, n)
	plain := append([]string(nil), c.plainHTTP...)
	c.mu.Unlock()
	for _, h := range plain {
		n.UsePlainHTTP(h)
	}
	if err := c.register(); err != nil {
		return nil, err
	}
	return n, nil
}

// AddNode adds a node to a multi-node cluster and waits until it is Ready,
// kube-proxy included. With o.Taints it registers tainted, as a node pool
// with startup taints does.
func (c *Cluster) AddNode(o NodeOptions) *Node {
	c.t.Helper()
	if c.opts.Nodes == 0 {
		c.t.Fatalf("clustertest: AddNode needs a multi-node cluster (Options.Nodes > 0)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	began := time.Now()
	n, err := c.newNode(o)
	if err == nil {
		err = n.start(ctx)
	}
	if err != nil {
		c.t.Fatalf("clustertest: add node: %v", err)
	}
	c.t.Logf("clustertest: node %s Ready in %v", n.name, time.Since(began).Round(100*time.Millisecond))
	return n
}

// Nodes lists the nodes of a multi-node cluster.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Node is the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes() {
		if n.name == name {
			return n
		}
	}
	return nil
}

// HostIP is the machine's address on a multi-node cluster's bridge: the
// only address of the machine the nodes can reach. Servers the nodes must
// reach (test registries: rig.RegistryOptions.Host) listen there.
func (c *Cluster) HostIP() string { return c.rnet.hostIP() }

// DNSServiceIP is the cluster DNS Service's address.
func (c *Cluster) DNSServiceIP() string { return c.rnet.dnsIP() }

// prepareNodeImages writes the archives every node imports: the pause
// image and CoreDNS (the testbin binary in a one-layer image).
func (c *Cluster) prepareNodeImages() error {
	pause, err := c.pauseArchive()
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(filepath.Join(c.bin, "coredns"))
	if err != nil {
		return fmt.Errorf("coredns image: %w", err)
	}
	img, err := buildFilesImage([]File{{Path: "coredns", Mode: 0o755, Data: bin}},
		ocispec.ImageConfig{Entrypoint: []string{"/coredns"}})
	if err != nil {
		return fmt.Errorf("coredns image: %w", err)
	}
	dns := filepath.Join(c.dir, "coredns.tar")
	if err := writeOCIArchive(dns, corednsImage, img); err != nil {
		return fmt.Errorf("coredns image: %w", err)
	}
	c.nodeImages = []nodeImage{{c.opts.PauseImage, pause}, {corednsImage, dns}}
	return nil
}

// prepareMachinePaths creates the machine paths nodes bind their own
// directories over (a bind mount needs its target), after claimHost has
// recorded which existed, so the last cluster to stop removes the new ones.
// The directory holding the mount namespace files must be a private mount.
func (c *Cluster) prepareMachinePaths() error {
	for _, m := range nodeMounts {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", m.dst, err)
		}
	}
	nsDir := filepath.Join(c.runDir, "ns")
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(nsDir, nsDir, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", nsDir, err)
	}
	if err := syscall.Mount("", nsDir, "", syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", nsDir, err)
	}
	return c.rnet.createHostSide()
}

// teardownNodes stops every node and removes its namespaces and cgroups.
func (c *Cluster) teardownNodes() []error {
	var errs []error
	nodes := c.Nodes()
	for _, n := range nodes {
		errs = append(errs, n.stop()...)
	}
	if _, err := c.killShims(); err != nil {
		errs = append(errs, err)
	}
	for _, n := range nodes {
		errs = append(errs, n.destroy()...)
	}
	return errs
}

// cleanMulti removes a multi-node cluster's host side (used for a cluster
// whose test process died too: namespaces and cgroups by name).
func (c *Cluster) cleanMulti(nodes []nodeRecord) []error {
	var errs []error
	for _, r := range nodes {
		n := &Node{netns: r.Netns, mntns: r.Mntns, cgroups: cgroupRoot{Name: r.Cgroup}}
		errs = append(errs, n.destroy()...)
	}
	if err := c.rnet.removeHostSide(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// nodeRecord is what the machine-wide registration keeps of a node.
type nodeRecord struct {
	Netns  string `json:"netns"`
	Mntns  string `json:"mntns"`
	Cgroup string `json:"cgroup"`
}

func (c *Cluster) nodeRecords() []nodeRecord {
	var rs []nodeRecord
	for _, n := range c.Nodes() {
		rs = append(rs, nodeRecord{Netns: n.netns, Mntns: n.mntns, Cgroup: n.cgroups.Name})
	}
	return rs
}
