package hooks

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/httplimits"
	"github.com/tagger-project/tagger/pkg/pins"
)

// pathPrefix is where the receivers live.
const pathPrefix = "/hooks/"

// authKind is how a provider authenticates deliveries.
type authKind uint8

const (
	authURLToken authKind = iota // /hooks/<provider>/<token>
	authHMAC                     // X-Hub-Signature-256 over the raw body
	authHeader                   // Authorization header equals the secret
)

// provider is one enabled receiver.
type provider struct {
	name   string
	auth   authKind
	secret string
	parse  func(h http.Header, body []byte) (event, error)
}

// Server receives registry webhooks and requests checks of the matching Tags.
// Its handler may serve before Run starts; queued checks wait for Run.
type Server struct {
	client  client.Client
	log     logrus.FieldLogger
	metrics *metrics
	// providers maps enabled provider names to their secret and parser;
	// SetSecrets swaps it whole, so a delivery sees one consistent set.
	providers  atomic.Pointer[map[string]*provider]
	registries Registries
	queue      *queue
	onCheck    func(CheckRequest)

	callbacks      bool
	callbackHosts  []string
	callbackClient *http.Client
	callbackSlots  chan struct{}
	callbackWG     sync.WaitGroup

	// seen remembers deliveries already processed (replayKeys).
	seen *replayMemory
	// authLog bounds the warnings about unauthenticated deliveries.
	authLog *logLimiter

	running  atomic.Bool
	lastNano atomic.Int64
}

// maxCallbacksInFlight bounds concurrent Docker Hub callbacks.
const maxCallbacksInFlight = 16

// New validates o and returns a Server. Options.Client is required.
func New(o Options) (*Server, error) {
	if o.Client == nil {
		return nil, errors.New("hooks: Options.Client is required")
	}
	if o.Coalesce < 0 {
		return nil, fmt.Errorf("hooks: Options.Coalesce must not be negative, got %v", o.Coalesce)
	}
	if o.Coalesce == 0 {
		o.Coalesce = DefaultCoalesce
	}
	if o.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Log = l
	}
	m, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, err
	}
	hosts := o.DockerHubCallbackHosts
	if len(hosts) == 0 {
		hosts = DefaultDockerHubCallbackHosts
	}
	hc := httplimits.Callback.HTTPClient()
	if o.HTTPClient != nil {
		c := *o.HTTPClient
		hc = &c
	}
	// A callback goes only where the allowlist says; a redirect must not
	// take it elsewhere.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	s := &Server{
		client:         o.Client,
		log:            o.Log.WithField("component", "webhooks"),
		metrics:        m,
		queue:          newQueue(o.Coalesce, m.pending),
		onCheck:        o.OnCheckRequested,
		callbacks:      o.DockerHubCallback,
		callbackHosts:  hosts,
		callbackClient: hc,
		callbackSlots:  make(chan struct{}, maxCallbacksInFlight),
		seen:           newReplayMemory(maxSeenDeliveries),
		authLog:        newLogLimiter(10*time.Second, 5),
	}
	s.registries = o.Registries.withDefaults()
	s.SetSecrets(o.Secrets)
	return s, nil
}

// SetSecrets replaces the per-provider secrets, for a rotated Secret: the
// next delivery is checked against the new ones, and a provider whose
// secret became empty answers 404. Safe to call while serving.
func (s *Server) SetSecrets(sec Secrets) {
	reg := s.registries
	m := map[string]*provider{}
	add := func(name string, auth authKind, secret string, parse func(http.Header, []byte) (event, error)) {
		if secret != "" {
			m[name] = &provider{name: name, auth: auth, secret: secret, parse: parse}
		}
	}
	add(ProviderDockerHub, authURLToken, sec.DockerHub, func(_ http.Header, b []byte) (event, error) { return parseDockerHub(b, reg) })
	add(ProviderQuay, authURLToken, sec.Quay, func(_ http.Header, b []byte) (event, error) { return parseQuay(b, reg) })
	add(ProviderGitHub, authHMAC, sec.GitHub, func(h http.Header, b []byte) (event, error) {
		return parseGitHub(h.Get("X-GitHub-Event"), b, reg)
	})
	add(ProviderHarbor, authHeader, sec.Harbor, func(_ http.Header, b []byte) (event, error) { return parseHarbor(b, reg) })
	add(ProviderGeneric, authURLToken, sec.Generic, func(_ http.Header, b []byte) (event, error) { return parseGeneric(b) })
	s.providers.Store(&m)
}

// Handler serves the webhook routes under /hooks/. Mount it at "/" or at
// "/hooks/" of a mux; paths are matched in full.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// reply is the outcome of one delivery.
type reply struct {
	status int
	result result
	body   any
	// msg is logged; never include a secret or the request path.
	msg string
}

type errorBody struct {
	Error string `json:"error"`
}

type acceptedBody struct {
	Checks  int    `json:"checks"`
	Ignored string `json:"ignored,omitempty"`
}

func failure(status int, res result, msg string) reply {
	return reply{status: status, result: res, body: errorBody{Error: msg}, msg: msg}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name, token, hasToken := splitPath(r.URL.Path)
	p := (*s.providers.Load())[name]
	label := name
	if p == nil {
		if !knownProvider(name) {
			label = providerUnknown
		}
		s.finish(w, r, label, failure(http.StatusNotFound, resultNotFound, "not found"), nil, start)
		return
	}
	rep, ev := s.handle(w, r, p, token, hasToken)
	s.finish(w, r, label, rep, ev, start)
	if rep.status == http.StatusAccepted && ev != nil && ev.callbackURL != "" && s.callbacks {
		s.callback(ev.callbackURL)
	}
}

// handle authenticates, reads and parses one delivery and queues its checks.
// Authentication comes before anything that would tell a caller without the
// secret more than "401"; for GitHub, whose secret signs the body, that
// means reading the body (bounded) and checking the signature before the
// method, the content type or the size is judged.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, p *provider, token string, hasToken bool) (reply, *event) {
	if p.auth == authHMAC {
		return s.handleSigned(w, r, p, hasToken)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return failure(http.StatusMethodNotAllowed, resultMethodNotAllowed, "method not allowed"), nil
	}
	switch p.auth {
	case authURLToken:
		if !secretEqual(token, p.secret) {
			return unauthorized, nil
		}
	case authHeader:
		if hasToken {
			return failure(http.StatusNotFound, resultNotFound, "not found"), nil
		}
		if !secretEqual(r.Header.Get("Authorization"), p.secret) {
			return unauthorized, nil
		}
	}
	if !jsonContentType(r.Header.Get("Content-Type")) {
		return failure(http.StatusUnsupportedMediaType, resultUnsupportedMedia, "Content-Type must be application/json"), nil
	}
	body, rep, ok := readBody(w, r)
	if !ok {
		return rep, nil
	}
	return s.accept(r, p, body)
}

// unauthorized is the one answer to a delivery that fails authentication.
var unauthorized = failure(http.StatusUnauthorized, resultUnauthorized, "unauthorized")

// handleSigned is handle for GitHub: nothing but a valid signature over the
// body gets an answer other than 401 (a path with a token is a 404, as for
// any provider that takes none). A replayed body is recognised after that.
func (s *Server) handleSigned(w http.ResponseWriter, r *http.Request, p *provider, hasToken bool) (reply, *event) {
	if hasToken {
		return failure(http.StatusNotFound, resultNotFound, "not found"), nil
	}
	sig := r.Header.Get("X-Hub-Signature-256")
	if !strings.HasPrefix(sig, signaturePrefix) {
		return unauthorized, nil
	}
	body, rep, ok := readBody(w, r)
	// A body too large to verify, or unreadable, is not told apart from a
	// bad signature: a caller without the secret learns nothing but 401.
	// An empty body is checked like any other (its signature may be valid).
	empty := !ok && len(body) == 0 && rep.result == resultBadRequest
	if (!ok && !empty) || !validSignature(sig, body, p.secret) {
		return unauthorized, nil
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return failure(http.StatusMethodNotAllowed, resultMethodNotAllowed, "method not allowed"), nil
	}
	if empty {
		return rep, nil
	}
	if !jsonContentType(r.Header.Get("Content-Type")) {
		return failure(http.StatusUnsupportedMediaType, resultUnsupportedMedia, "Content-Type must be application/json"), nil
	}
	return s.accept(r, p, body)
}

// accept parses an authenticated body, refuses a replay and queues the
// checks it asks for.
func (s *Server) accept(r *http.Request, p *provider, body []byte) (reply, *event) {
	ev, err := p.parse(r.Header, body)
	if err != nil {
		if isPayloadError(err) {
			return failure(http.StatusBadRequest, resultBadRequest, clip(err.Error())), nil
		}
		return failure(http.StatusInternalServerError, resultError, "internal error"), nil
	}
	if ev.ignored != "" {
		ev.ignored = clip(ev.ignored)
		return reply{status: http.StatusOK, result: resultAccepted, body: acceptedBody{Ignored: ev.ignored}, msg: "ignored: " + ev.ignored}, &ev
	}
	sum := sha256.Sum256(body)
	keys := s.replayKeys(p, r.Header, sum)
	if len(keys) > 0 && !s.seen.add(keys...) {
		return reply{status: http.StatusOK, result: resultReplayed, body: acceptedBody{Ignored: "delivery already received"}, msg: "replayed delivery ignored"}, &ev
	}
	names, err := s.matchingTags(r.Context(), ev.refs)
	if err != nil {
		// Not processed: a redelivery must be, so it is not a replay.
		s.seen.remove(keys...)
		s.log.WithError(err).WithField("provider", p.name).Error("list Tags for webhook")
		return failure(http.StatusInternalServerError, resultError, "internal error"), &ev
	}
	if len(names) == 0 {
		return failure(http.StatusNotFound, resultNotFound, clip("no Tag pins "+refList(ev.refs))), &ev
	}
	s.queue.add(names, p.name, string(sum[:]), time.Now())
	return reply{status: http.StatusAccepted, result: resultAccepted, body: acceptedBody{Checks: len(names)}, msg: "checks queued"}, &ev
}

// finish writes the answer, counts it and logs it.
func (s *Server) finish(w http.ResponseWriter, r *http.Request, provider string, rep reply, ev *event, start time.Time) {
	writeJSON(w, rep.status, rep.body)
	s.metrics.webhooks.WithLabelValues(provider, string(rep.result)).Inc()
	fields := logrus.Fields{
		"provider": provider,
		"status":   rep.status,
		"result":   string(rep.result),
		"remote":   r.RemoteAddr,
		"duration": time.Since(start).Round(time.Microsecond).String(),
	}
	if ev != nil && len(ev.refs) > 0 {
		fields["images"] = refList(ev.refs)
	}
	if body, ok := rep.body.(acceptedBody); ok {
		fields["checks"] = body.Checks
	}
	entry := s.log.WithFields(fields)
	switch {
	case rep.status >= 500:
		entry.Error("webhook: " + rep.msg)
	case rep.status == http.StatusUnauthorized:
		// Anyone can send these: a cheap log flood without a bound.
		if ok, suppressed := s.authLog.allow(time.Now()); ok {
			if suppressed > 0 {
				entry = entry.WithField("suppressed", suppressed)
			}
			entry.Warn("webhook: " + rep.msg)
		} else {
			s.metrics.logsSuppressed.Inc()
		}
	case rep.status >= 400:
		entry.Info("webhook refused: " + rep.msg)
	default:
		entry.Info("webhook: " + rep.msg)
	}
}

// matchingTags returns the names of the Tags pinning any of refs, in the
// order found, without duplicates. Each ref is one index lookup in the cache.
func (s *Server) matchingTags(ctx context.Context, refs []pins.Reference) ([]string, error) {
	images := map[string]bool{}
	tags := map[string]bool{}
	var names []string
	for _, ref := range refs {
		img := ref.String()
		if images[img] {
			continue
		}
		images[img] = true
		var list v1alpha1.TagList
		if err := s.client.List(ctx, &list, client.MatchingFields{ImageIndex: img}); err != nil {
			return nil, fmt.Errorf("list Tags for image %s: %w", img, err)
		}
		for i := range list.Items {
			t := &list.Items[i]
			if t.DeletionTimestamp != nil || tags[t.Name] {
				continue
			}
			tags[t.Name] = true
			names = append(names, t.Name)
		}
	}
	return names, nil
}

// splitPath splits "/hooks/<provider>[/<token>]". hasToken is true when
// anything follows the provider, even an empty token.
func splitPath(path string) (name, token string, hasToken bool) {
	rest, ok := strings.CutPrefix(path, pathPrefix)
	if !ok {
		return "", "", false
	}
	name, token, hasToken = strings.Cut(rest, "/")
	return name, token, hasToken
}

func knownProvider(name string) bool {
	switch name {
	case ProviderDockerHub, ProviderQuay, ProviderGitHub, ProviderHarbor, ProviderGeneric:
		return true
	}
	return false
}

// jsonContentType accepts application/json with an optional utf-8 charset
// (JSON has no other encoding, RFC 8259).
func jsonContentType(v string) bool {
	mt, params, err := mime.ParseMediaType(v)
	if err != nil || mt != "application/json" {
		return false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return false
	}
	return true
}

// readBody reads at most MaxBodyBytes; a larger body is 413 whether or not
// it announced its length.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, reply, bool) {
	if r.ContentLength > MaxBodyBytes {
		return nil, failure(http.StatusRequestEntityTooLarge, resultTooLarge, fmt.Sprintf("body larger than %d bytes", MaxBodyBytes)), false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, failure(http.StatusRequestEntityTooLarge, resultTooLarge, fmt.Sprintf("body larger than %d bytes", MaxBodyBytes)), false
		}
		return nil, failure(http.StatusBadRequest, resultBadRequest, "could not read body"), false
	}
	if len(body) == 0 {
		return nil, failure(http.StatusBadRequest, resultBadRequest, "empty body"), false
	}
	return body, reply{}, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// refList renders refs for logs and error messages, shortened after a few.
func refList(refs []pins.Reference) string {
	const show = 3
	parts := make([]string, 0, show+1)
	for i, r := range refs {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(refs)-show))
			break
		}
		parts = append(parts, r.String())
	}
	return strings.Join(parts, ", ")
}

// ServerError renders an error net/http's server answers before the
// handler runs (malformed request line, headers too large) in the
// receivers' own error format, for httplimits.RewriteErrors.
func ServerError(status int, text string) (string, []byte) {
	if text == "" {
		text = http.StatusText(status)
	}
	body, _ := json.Marshal(errorBody{Error: text})
	return "application/json", append(body, '\n')
}
