package hostsprobe

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// mirrorPuller stands in for containerd: when it reads our hosts.toml it
// asks the mirror for the reference (with ?ns=), else it does not.
type mirrorPuller struct {
	mirror   http.Handler
	readsDir bool
}

func (m mirrorPuller) Pull(_ context.Context, ref string) error {
	if !m.readsDir {
		return errors.New("lookup tagger-probe.invalid: no such host")
	}
	repoTag := strings.TrimPrefix(ref, Host+"/")
	repo, tag, _ := strings.Cut(repoTag, ":")
	rec := httptest.NewRecorder()
	m.mirror.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/v2/"+repo+"/manifests/"+tag+"?ns="+Host, nil))
	if rec.Code != http.StatusNotFound {
		return errors.New("probe answered " + rec.Result().Status)
	}
	return errors.New("not found")
}

func TestCheck(t *testing.T) {
	p := New()
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := p.Wrap(next)
	if err := p.Check(t.Context(), mirrorPuller{mirror: h, readsDir: true}, 5*time.Second); err != nil {
		t.Fatalf("containerd that asks the mirror: %v", err)
	}
	err := p.Check(t.Context(), mirrorPuller{mirror: h, readsDir: false}, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "does not read the hosts.toml") {
		t.Fatalf("containerd that never asks: %v", err)
	}
	if len(p.seen) != 0 {
		t.Errorf("nonces kept after Check: %v", p.seen)
	}
}

// Requests for other registries go to the mirror untouched.
func TestWrapPassesOthers(t *testing.T) {
	h := New().Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for _, target := range []string{"/v2/", "/v2/library/nginx/manifests/1?ns=docker.io", "/v2/x/manifests/y"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code != http.StatusTeapot {
			t.Errorf("%s answered %d by the probe", target, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/tagger/probe/manifests/n?ns="+Host, nil))
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "MANIFEST_UNKNOWN") {
		t.Errorf("probe request answered %d %s, want 404 MANIFEST_UNKNOWN", rec.Code, rec.Body)
	}
}

// A pull that neither reaches the mirror nor ends times out.
func TestCheckTimeout(t *testing.T) {
	p := New()
	block := pullFunc(func(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() })
	err := p.Check(t.Context(), block, 50*time.Millisecond)
	if err == nil {
		t.Fatal("a pull that never asked passed")
	}
}

type pullFunc func(context.Context, string) error

func (f pullFunc) Pull(ctx context.Context, ref string) error { return f(ctx, ref) }
