// Package hostsprobe proves, live, that the node's containerd reads the
// hosts.toml files the node agent writes: a config file that says so may not
// be the config containerd runs with (edited but not restarted, another path
// than the one mounted, a drop-in the agent cannot see).
//
// The agent writes a strict hosts.toml for Host, a name that never resolves
// (RFC 2606 ".invalid"), whose only endpoint is the mirror. Check pulls
// Host/tagger/probe:<nonce> through the CRI image service, the path kubelet
// pulls by; containerd can reach that name only through the hosts.toml, so
// the mirror seeing the nonce proves containerd consulted the hosts dir. The
// mirror answers 404 and the pull fails, as intended: nothing is pulled.
package hostsprobe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path"
	"sync"
	"time"
)

// Host is the registry name of the probe image.
const Host = "tagger-probe.invalid"

// Puller pulls an image through containerd's CRI image service.
type Puller interface {
	Pull(ctx context.Context, ref string) error
}

// Probe records the probe requests containerd sends to the mirror.
type Probe struct {
	mu   sync.Mutex
	seen map[string]chan struct{} // nonce -> closed once asked for
}

// New returns a Probe that has seen nothing.
func New() *Probe { return &Probe{seen: map[string]chan struct{}{}} }

func (p *Probe) wait(nonce string) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch, ok := p.seen[nonce]
	if !ok {
		ch = make(chan struct{})
		p.seen[nonce] = ch
	}
	return ch
}

func (p *Probe) record(nonce string) {
	ch := p.wait(nonce)
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (p *Probe) forget(nonce string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.seen, nonce)
}

// Wrap answers requests for Host (containerd names it in ?ns=) itself,
// records their last path element (the nonce, for a manifest request) and
// passes every other request to next.
func (p *Probe) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("ns") != Host {
			next.ServeHTTP(w, r)
			return
		}
		p.record(path.Base(r.URL.Path))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"tagger hosts.toml probe"}]}`))
	})
}

// Check pulls a fresh probe reference through pl and returns nil once the
// mirror has been asked for it; an error when the pull ended, or timeout
// passed, without that.
func (p *Probe) Check(ctx context.Context, pl Puller, timeout time.Duration) error {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("probe nonce: %w", err)
	}
	nonce := "probe-" + hex.EncodeToString(b)
	ref := Host + "/tagger/probe:" + nonce
	seen := p.wait(nonce)
	defer p.forget(nonce)

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pulled := make(chan error, 1)
	go func() { pulled <- pl.Pull(ctx, ref) }()
	select {
	case <-seen:
		return nil
	case err := <-pulled:
		select {
		case <-seen:
			return nil
		default:
		}
		if err == nil {
			err = errors.New("the pull succeeded")
		}
		return fmt.Errorf("containerd pulled %s without asking the node agent's mirror, so it does not read the hosts.toml files in the agent's hosts dir: %w", ref, err)
	case <-ctx.Done():
		return fmt.Errorf("containerd did not ask the mirror for %s within %s: %w", ref, timeout, ctx.Err())
	}
}
