package registryauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tagger-project/tagger/pkg/httplimits"
)

// TokenPath is the issuer's path: the registry's realm is
// http://<controller service>:<port>/token.
const TokenPath = "/token"

// Options configure the issuer's listener.
type Options struct {
	// Addr is the listen address; "" or "0" disables the issuer.
	Addr string
	// KeyFile is the PEM private key tokens are signed with.
	KeyFile string
	// Audience the presented ServiceAccount tokens must be bound to.
	Audience string
	// Service and Issuer are the registry's auth.token.service and .issuer.
	Service, Issuer string
	// Pushers may pull, push and delete; Pullers may pull (user names,
	// "system:serviceaccount:<namespace>:<name>").
	Pushers, Pullers []string
	// TTL of issued tokens.
	TTL time.Duration
}

// Enabled reports whether o asks for an issuer.
func (o Options) Enabled() bool { return o.Addr != "" && o.Addr != "0" }

// Server is the issuer's HTTP server, a controller-runtime Runnable that
// runs on every replica.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// NewServer loads the key and listens on o.Addr.
func NewServer(cfg *rest.Config, o Options, log logrus.FieldLogger) (*Server, error) {
	if o.Service == "" || o.Issuer == "" {
		return nil, errors.New("registry token issuer: service and issuer names are required")
	}
	keys, err := NewKeyFile(o.KeyFile)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("registry token issuer: kube client: %w", err)
	}
	aud := o.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	iss := &Issuer{Keys: keys, Reviewer: TokenReviewer{Client: cs}, Audience: aud, Service: o.Service, Name: o.Issuer,
		Pushers: o.Pushers, Pullers: o.Pullers, TTL: o.TTL, Log: log}
	mux := http.NewServeMux()
	mux.Handle(TokenPath, iss)
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("registry token issuer: listen on %s: %w", o.Addr, err)
	}
	return &Server{srv: httplimits.Webhooks.New(mux), ln: ln}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// NeedLeaderElection is false: every replica issues tokens.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("registry token issuer: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.srv.Shutdown(sctx)
	}
}
