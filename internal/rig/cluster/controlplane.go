package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tagger-project/tagger/internal/rig"
)

const (
	singleServiceCIDR = "10.0.0.0/24"
	// portAttempts bounds restarts of a component that lost the race for a
	// port the rig picked.
	portAttempts = 5
)

// writePKI makes the CA, the apiserver's serving certificate, every
// component's client certificate and kubeconfig, and the service account key.
func (c *Cluster) writePKI() error {
	p, err := newPKI(filepath.Join(c.dir, "pki"))
	if err != nil {
		return err
	}
	c.pki = p
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP(c.apiServiceIP())}
	if c.opts.Nodes > 0 {
		ips = append(ips, net.ParseIP(c.rnet.hostIP()))
	}
	if _, err := p.serving("apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips); err != nil {
		return err
	}
	if _, err := p.serviceAccountKey(); err != nil {
		return err
	}
	if _, err := p.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"); err != nil {
		return err
	}
	clients := map[string][2]string{
		"admin":                   {"clustertest-admin", "system:masters"},
		"kube-controller-manager": {"system:kube-controller-manager", ""},
		"kube-scheduler":          {"system:kube-scheduler", ""},
		"kubelet":                 {"system:node:" + c.opts.NodeName, "system:nodes"},
		"kube-proxy":              {"system:kube-proxy", ""},
	}
	c.kubeconfigs = map[string]string{}
	for name, id := range clients {
		var groups []string
		if id[1] != "" {
			groups = []string{id[1]}
		}
		if _, err := p.client(name, id[0], groups...); err != nil {
			return err
		}
		c.kubeconfigs[name] = filepath.Join(p.dir, name+".kubeconfig")
	}
	return nil
}

// apiHost is the address the apiserver listens on and advertises: loopback
// for the single node, the cluster bridge's address for nodes in
// namespaces of their own.
func (c *Cluster) apiHost() string {
	if c.opts.Nodes > 0 {
		return c.rnet.hostIP()
	}
	return "127.0.0.1"
}

// serviceCIDR is the Service range; the single node's has no meaning
// outside the apiserver (no kube-proxy), a multi-node cluster's is in its /16.
func (c *Cluster) serviceCIDR() string {
	if c.opts.Nodes > 0 {
		return c.rnet.serviceCIDR()
	}
	return singleServiceCIDR
}

func (c *Cluster) apiServiceIP() string {
	if c.opts.Nodes > 0 {
		return c.rnet.apiServiceIP()
	}
	return "10.0.0.1"
}

// apiServer is the apiserver's URL.
func (c *Cluster) apiServer() string {
	return "https://" + net.JoinHostPort(c.apiHost(), strconv.Itoa(c.apiserverPort))
}

// writeKubeconfig writes the kubeconfig of client certificate name to path.
func (c *Cluster) writeKubeconfig(name, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["clustertest"] = &clientcmdapi.Cluster{Server: c.apiServer(), CertificateAuthority: c.pki.CAFile()}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{
		ClientCertificate: filepath.Join(c.pki.dir, name+".crt"),
		ClientKey:         filepath.Join(c.pki.dir, name+".key"),
	}
	kc.Contexts["clustertest"] = &clientcmdapi.Context{Cluster: "clustertest", AuthInfo: name}
	kc.CurrentContext = "clustertest"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write %s kubeconfig: %w", name, err)
	}
	return nil
}

// writeKubeconfigs writes every component's kubeconfig for the apiserver's
// (now known) port, and builds the admin client.
func (c *Cluster) writeKubeconfigs() error {
	server := c.apiServer()
	for name, path := range c.kubeconfigs {
		if err := c.writeKubeconfig(name, path); err != nil {
			return err
		}
	}
	c.config = &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.pki.CAPEM(),
			CertFile: filepath.Join(c.pki.dir, "admin.crt"),
			KeyFile:  filepath.Join(c.pki.dir, "admin.key"),
		},
		QPS:   100,
		Burst: 200,
	}
	cs, err := kubernetes.NewForConfig(c.config)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	c.client = cs
	return nil
}

// startWithPorts runs start with fresh ports until it does not fail with
// errAddrInUse.
func startWithPorts(n int, start func(ports []int) error) error {
	var err error
	for range portAttempts {
		var ports []int
		if ports, err = rig.FreePorts(n); err != nil {
			return err
		}
		if err = start(ports); !errors.Is(err, errAddrInUse) {
			return err
		}
	}
	return err
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	return startWithPorts(2, func(ports []int) error {
		c.etcdPort, c.etcdPeerPort = ports[0], ports[1]
		client := "http://127.0.0.1:" + strconv.Itoa(c.etcdPort)
		peer := "http://127.0.0.1:" + strconv.Itoa(c.etcdPeerPort)
		p, err := startProc(c.logDir, "etcd", filepath.Join(c.bin, "etcd"), []string{
			"--name=clustertest",
			"--data-dir=" + filepath.Join(c.dir, "etcd"),
			"--listen-client-urls=" + client,
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=clustertest=" + peer,
			// A test cluster's data is thrown away: do not pay for fsync on a shared disk.
			"--unsafe-no-fsync=true",
			"--log-level=warn",
		}, c.env(), c.dir)
		if err != nil {
			return err
		}
		c.setProc(&c.etcd, p)
		if err := waitHTTP(ctx, p, client+"/health", nil); err != nil {
			_, _ = p.stop(time.Second)
			return err
		}
		return nil
	})
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	return startWithPorts(1, func(ports []int) error {
		c.apiserverPort = ports[0]
		pk := c.pki.dir
		p, err := startProc(c.logDir, "kube-apiserver", filepath.Join(c.bin, "kube-apiserver"), []string{
			"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(c.etcdPort),
			"--bind-address=" + c.apiHost(),
			"--secure-port=" + strconv.Itoa(c.apiserverPort),
			"--advertise-address=" + c.apiHost(),
			// A loopback advertise address is refused unless the endpoint
			// reconciler is off; the bridge's address is a real one.
			"--endpoint-reconciler-type=" + map[bool]string{true: "lease", false: "none"}[c.opts.Nodes > 0],
			"--cert-dir=" + filepath.Join(c.dir, "apiserver"),
			"--tls-cert-file=" + filepath.Join(pk, "apiserver.crt"),
			"--tls-private-key-file=" + filepath.Join(pk, "apiserver.key"),
			"--client-ca-file=" + c.pki.CAFile(),
			"--kubelet-client-certificate=" + filepath.Join(pk, "apiserver-kubelet-client.crt"),
			"--kubelet-client-key=" + filepath.Join(pk, "apiserver-kubelet-client.key"),
			"--service-account-key-file=" + filepath.Join(pk, "sa.pub"),
			"--service-account-signing-key-file=" + filepath.Join(pk, "sa.key"),
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-cluster-ip-range=" + c.serviceCIDR(),
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--allow-privileged=true",
			"--profiling=false",
		}, c.env(), c.dir)
		if err != nil {
			return err
		}
		c.setProc(&c.apiserver, p)
		if err := c.writeKubeconfigs(); err != nil {
			return err
		}
		tr, err := rest.TransportFor(c.config)
		if err != nil {
			return fmt.Errorf("admin transport: %w", err)
		}
		if err := waitHTTP(ctx, p, c.config.Host+"/readyz", tr); err != nil {
			_, _ = p.stop(time.Second)
			return err
		}
		return nil
	})
}

// startControllers starts the controller-manager and the scheduler. Neither
// serves anything (--secure-port=0): nothing here needs their healthz, and
// the rig waits for their effects (the default ServiceAccount, a scheduled pod).
func (c *Cluster) startControllers() error {
	pk := c.pki.dir
	cm, err := startProc(c.logDir, "kube-controller-manager", filepath.Join(c.bin, "kube-controller-manager"), []string{
		"--kubeconfig=" + c.kubeconfigs["kube-controller-manager"],
		"--secure-port=0",
		// nodeipam would want a cluster CIDR; the CNI conflist has its own subnet.
		"--controllers=*,-nodeipam",
		"--use-service-account-credentials=true",
		"--root-ca-file=" + c.pki.CAFile(),
		"--service-account-private-key-file=" + filepath.Join(pk, "sa.key"),
		"--service-cluster-ip-range=" + c.serviceCIDR(),
		"--leader-elect=false",
		"--profiling=false",
		// Default /usr/libexec/kubernetes/kubelet-plugins/volume/exec/, which it creates.
		"--flex-volume-plugin-dir=" + filepath.Join(c.dir, "flex-volume"),
	}, c.env(), c.dir)
	if err != nil {
		return err
	}
	c.setProc(&c.controllerManager, cm)
	s, err := startProc(c.logDir, "kube-scheduler", filepath.Join(c.bin, "kube-scheduler"), []string{
		"--kubeconfig=" + c.kubeconfigs["kube-scheduler"],
		"--secure-port=0",
		"--leader-elect=false",
		"--profiling=false",
	}, c.env(), c.dir)
	if err != nil {
		return err
	}
	c.setProc(&c.scheduler, s)
	return nil
}

func (c *Cluster) setProc(slot **proc, p *proc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*slot = p
}

// waitHTTP polls url until it answers 200, the process exits, or ctx ends.
func waitHTTP(ctx context.Context, p *proc, url string, tr http.RoundTripper) error {
	if tr == nil {
		tr = &http.Transport{DisableKeepAlives: true}
	}
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	var last string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return false, p.exitError()
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		return fmt.Errorf("%s: %s not ready (%s); log %s:\n%s", p.name, url, last, p.logPath, p.tail(4<<10))
	}
	return err
}
