// The object store: NewS3 runs a real S3-compatible object store for tests: SeaweedFS
// (`weed server` with its master, volume server, filer and S3 gateway in one
// process, the binary hack/testbin.sh builds) on ephemeral loopback ports,
// with one bucket and one signature-v4 identity. Registries started by
// NewRegistry with S3Options.S3 store their content in it.

package rig

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// S3Options configure a S3Server. The zero value is fine.
type S3Options struct {
	// Bucket is created at start; default "tagger".
	Bucket string
	// AccessKey and SecretKey are the one identity the store accepts
	// (an admin); default random.
	AccessKey, SecretKey string
}

// S3Region is the region requests are signed for; SeaweedFS accepts any.
const S3Region = "us-east-1"

const (
	s3StartAttempts = 3
	// s3StartTimeout covers the master's raft start, the volume server's
	// first heartbeat and the first volume allocation.
	s3StartTimeout = 90 * time.Second
	// s3ProbeTimeout bounds one readiness request. The first object write
	// waits for weed's first volume allocation (several seconds).
	s3ProbeTimeout = 20 * time.Second
	// s3TermGrace is how long Stop waits after SIGTERM before SIGKILL. weed's
	// own graceful shutdown takes ~15s: its filer keeps retrying to flush
	// its metadata log to the volume server it has already stopped. Test
	// data has nothing to keep, so it is cut short.
	s3TermGrace   = 3 * time.Second
	s3StopTimeout = 10 * time.Second
)

// S3Server is a running (or stopped) SeaweedFS server with an S3 gateway on
// 127.0.0.1.
type S3Server struct {
	t      T
	bin    string
	dir    string
	opts   S3Options
	client *http.Client

	mu    sync.Mutex
	ports s3Ports
	proc  *Process
}

// s3Ports are every port weed server listens on. All are set explicitly: left
// at 0 weed derives a gRPC port as the HTTP port + 10000, which may be taken.
type s3Ports struct {
	master, masterGRPC, volume, volumeGRPC, filer, filerGRPC, s3, s3GRPC int
}

// New starts a store on ephemeral loopback ports, creates the bucket and
// stops the store when the test ends. It needs the weed binary
// (RequireBins semantics: skip locally, fail in CI when it is missing).
func NewS3(t testing.TB, o S3Options) *S3Server {
	t.Helper()
	return StartS3(t, filepath.Join(RequireBins(t, "weed"), "weed"), o)
}

// Start is New with an explicit weed binary.
func StartS3(t T, bin string, o S3Options) *S3Server {
	t.Helper()
	if o.Bucket == "" {
		o.Bucket = "tagger"
	}
	if o.AccessKey == "" {
		o.AccessKey = "AK" + strings.ToUpper(randomHex(9))
	}
	if o.SecretKey == "" {
		o.SecretKey = randomHex(20)
	}
	s := &S3Server{
		t:      t,
		bin:    bin,
		dir:    t.TempDir(),
		opts:   o,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}},
	}
	t.Cleanup(func() {
		s.Stop()
		s.client.CloseIdleConnections()
	})
	var err error
	for range s3StartAttempts {
		if err = s.start(); !errors.Is(err, errAddrInUse) {
			break
		}
		// A port was taken between our probe and weed's bind: pick others.
	}
	if err != nil {
		t.Fatalf("rig s3: %v", err)
	}
	return s
}

// Endpoint is the S3 gateway's base URL, "http://127.0.0.1:port".
func (s *S3Server) Endpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endpointLocked()
}

func (s *S3Server) endpointLocked() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.ports.s3))
}

// Bucket is the bucket created at start.
func (s *S3Server) Bucket() string { return s.opts.Bucket }

// AccessKey is the access key of the store's identity.
func (s *S3Server) AccessKey() string { return s.opts.AccessKey }

// SecretKey is the secret key of the store's identity.
func (s *S3Server) SecretKey() string { return s.opts.SecretKey }

// Storage is the registry configuration storing under rootDirectory in
// the bucket. Registries given the same rootDirectory share their content.
func (s *S3Server) Storage(rootDirectory string) *S3Storage {
	return &S3Storage{
		Endpoint:      s.Endpoint(),
		Bucket:        s.opts.Bucket,
		Region:        S3Region,
		AccessKey:     s.opts.AccessKey,
		SecretKey:     s.opts.SecretKey,
		RootDirectory: rootDirectory,
	}
}

// Running reports whether the weed process is up.
func (s *S3Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// Stop terminates weed (SIGTERM, then SIGKILL after s3TermGrace) and waits
// for it to exit. Stopping a stopped server does nothing.
func (s *S3Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	s.kill(p)
	if s.t.Failed() {
		s.t.Logf("rig s3: weed (s3 %s) output (tail):\n%s", s.endpointLocked(), p.Output().String())
	}
	s.client.CloseIdleConnections()
}

func (s *S3Server) kill(p *Process) {
	if !p.Terminate(s3TermGrace) && !p.Kill(s3StopTimeout) {
		s.t.Errorf("rig s3: weed pid %d did not exit %v after SIGKILL", p.Pid(), s3StopTimeout)
	}
	s.removeSockets()
}

// removeSockets deletes the unix sockets weed puts in /tmp for its gRPC
// services (their paths are fixed by weed, named by port).
func (s *S3Server) removeSockets() {
	for _, sock := range []struct {
		name string
		port int
	}{{"master", s.ports.masterGRPC}, {"volume", s.ports.volumeGRPC}, {"filer", s.ports.filerGRPC}, {"s3", s.ports.s3GRPC}} {
		_ = os.Remove(fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", sock.name, sock.port))
	}
}

// start picks fresh ports, spawns weed and waits until the bucket takes a
// write.
func (s *S3Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps, err := FreePorts(8)
	if err != nil {
		return err
	}
	s.ports = s3Ports{ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6], ps[7]}
	p, err := s.spawn()
	if err != nil {
		return err
	}
	if err := s.waitReady(p); err != nil {
		p.KillWait()
		s.removeSockets()
		return err
	}
	s.proc = p
	return nil
}

func (s *S3Server) spawn() (*Process, error) {
	data := filepath.Join(s.dir, "data")
	logs := filepath.Join(s.dir, "log")
	for _, d := range []string{data, logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("rig s3: %w", err)
		}
	}
	pt := s.ports
	args := []string{
		"-logdir=" + logs,
		"server",
		"-dir=" + data,
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port=" + strconv.Itoa(pt.master), "-master.port.grpc=" + strconv.Itoa(pt.masterGRPC),
		"-volume.port=" + strconv.Itoa(pt.volume), "-volume.port.grpc=" + strconv.Itoa(pt.volumeGRPC),
		"-filer", "-filer.port=" + strconv.Itoa(pt.filer), "-filer.port.grpc=" + strconv.Itoa(pt.filerGRPC),
		"-filer.localSocket=" + filepath.Join(s.dir, "f.sock"),
		"-s3", "-s3.port=" + strconv.Itoa(pt.s3), "-s3.port.grpc=" + strconv.Itoa(pt.s3GRPC),
		"-s3.localSocket=" + filepath.Join(s.dir, "s.sock"),
		// Side services with fixed default s3Ports: off.
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		// No phoning home from a test.
		"-master.telemetry=false",
		// Small volumes, so the first allocation is quick on any disk.
		"-master.volumeSizeLimitMB=64", "-volume.max=32",
		// Stop at once on SIGTERM (the default waits 10s after the last heartbeat).
		"-volume.preStopSeconds=0",
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Env = s.env()
	p, err := StartProcess(cmd, NewTailBuffer(64<<10))
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.bin, err)
	}
	return p, nil
}

// env is the test's environment without the variables weed or its AWS
// client read configuration from, with HOME in the temp dir (weed reads
// ~/.seaweedfs/*.toml) and the identity as the admin credentials weed
// takes from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
func (s *S3Server) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WEED_") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "S3_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+s.dir,
		"AWS_ACCESS_KEY_ID="+s.opts.AccessKey, "AWS_SECRET_ACCESS_KEY="+s.opts.SecretKey)
}

// waitReady polls until the bucket exists and takes (and gives back) a
// small object: the whole write path (master, volume server, filer,
// gateway) works. It fails early when weed exits.
func (s *S3Server) waitReady(p *Process) error {
	ctx, cancel := context.WithTimeout(context.Background(), s3StartTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	probe := &http.Client{Timeout: s3ProbeTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	bucket := "/" + s.opts.Bucket
	key := bucket + "/s3test-ready-" + randomHex(4)
	last := "no answer yet"
	created := false
	for {
		var status int
		var err error
		if !created {
			status, _, err = s.do(ctx, probe, http.MethodPut, bucket, nil)
			// 409 BucketAlreadyOwnedByYou: an earlier attempt got through.
			created = err == nil && (status == http.StatusOK || status == http.StatusConflict)
		}
		if created {
			if status, _, err = s.do(ctx, probe, http.MethodPut, key, []byte("ready")); err == nil && status == http.StatusOK {
				if status, _, err = s.do(ctx, probe, http.MethodDelete, key, nil); err == nil && status == http.StatusNoContent {
					return nil
				}
			}
		}
		if err != nil {
			last = err.Error()
		} else {
			last = "status " + strconv.Itoa(status)
		}

		select {
		case <-p.Done():
			out := p.Output().String()
			if strings.Contains(out, "address already in use") {
				return fmt.Errorf("start weed: %w", errAddrInUse)
			}
			return fmt.Errorf("start weed (s3 %s): exited (%v) before serving; output:\n%s", s.endpointLocked(), p.Err(), out)
		case <-ctx.Done():
			return fmt.Errorf("start weed (s3 %s): bucket %s not writable after %v (last: %s); output:\n%s",
				s.endpointLocked(), s.opts.Bucket, s3StartTimeout, last, p.Output().String())
		case <-tick.C:
		}
	}
}

// do sends one signed request to the gateway.
func (s *S3Server) do(ctx context.Context, c *http.Client, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.endpointLocked()+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.ContentLength = int64(len(body))
	signV4(req, hexSHA256(body), s.opts.AccessKey, s.opts.SecretKey, S3Region, time.Now())
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Keys lists the bucket's object keys under prefix, for tests asserting
// what a client really stored.
func (s *S3Server) Keys(t T, prefix string) []string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var keys []string
	token := ""
	for {
		q := url.Values{"list-type": {"2"}, "prefix": {prefix}}
		if token != "" {
			q.Set("continuation-token", token)
		}
		status, body, err := s.do(ctx, s.client, http.MethodGet, "/"+s.opts.Bucket+"?"+q.Encode(), nil)
		if err != nil || status != http.StatusOK {
			t.Fatalf("rig s3: list %s/%s: status %d, %v: %s", s.opts.Bucket, prefix, status, err, body)
		}
		var page struct {
			Contents []struct {
				Key string `xml:"Key"`
			} `xml:"Contents"`
			IsTruncated           bool   `xml:"IsTruncated"`
			NextContinuationToken string `xml:"NextContinuationToken"`
		}
		if err := xml.Unmarshal(body, &page); err != nil {
			t.Fatalf("rig s3: list %s/%s: %v", s.opts.Bucket, prefix, err)
		}
		for _, c := range page.Contents {
			keys = append(keys, c.Key)
		}
		if !page.IsTruncated || page.NextContinuationToken == "" {
			return keys
		}
		token = page.NextContinuationToken
	}
}
