package registryclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker/auth"
	"golang.org/x/sync/singleflight"
)

// ServiceAccountUser is the user name TokenAuth presents with a
// ServiceAccount token as the password; tagger's token issuer ignores it and
// reviews the token.
const ServiceAccountUser = "serviceaccount"

// CredentialFunc returns the credentials to present to a token service; it
// is called on every token fetch, never per request.
type CredentialFunc func(ctx context.Context) (Credentials, error)

// ServiceAccountToken presents the projected ServiceAccount token at path.
// The file is read on every token fetch, so the kubelet's rotation of it is
// honoured without a restart.
func ServiceAccountToken(path string) CredentialFunc {
	return func(context.Context) (Credentials, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return Credentials{}, fmt.Errorf("read service account token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return Credentials{}, fmt.Errorf("read service account token: %s is empty", path)
		}
		return Credentials{Username: ServiceAccountUser, Password: tok}, nil
	}
}

// TokenAuth is an http.RoundTripper for the bundled registry with
// distribution's token authentication: it works out the scope each request
// needs from its method and path (pull for reads; pull,push for uploads and
// manifest pushes; delete for deletes; pull on the source of a mount), gets
// a Bearer token for it from the realm the registry's challenge names, with
// Credentials' Basic, and caches it until shortly before it expires. So
// requests carry a cached token and never meet a 401 in the steady state;
// a token is fetched once per scope and lifetime, whatever the request rate.
type TokenAuth struct {
	host      string // the registry's host:port; requests elsewhere go out untouched
	next      http.RoundTripper
	creds     CredentialFunc
	tokenHTTP *http.Client
	userAgent string

	mu        sync.Mutex
	challenge *auth.Challenge // the registry's Bearer challenge, learnt once
	// openUntil: the registry answered /v2/ without asking for a token
	// (authentication not on yet, e.g. mid-upgrade); requests go without
	// one until then, or until a 401 brings a challenge.
	openUntil time.Time
	tokens    *authCache
	fetches   singleflight.Group
}

// NewTokenAuth wraps next (nil: http.DefaultTransport) for the registry at
// base ("http://host:port"): only requests to that host get a token, so a
// redirect elsewhere (a storage backend) never carries one. Credentials travel
// to the realm even over plain HTTP: the realm is tagger's own in-cluster
// issuer and the token an audience-bound ServiceAccount token only it accepts.
func NewTokenAuth(base string, next http.RoundTripper, creds CredentialFunc, userAgent string) (*TokenAuth, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("token auth: registry URL %q: want http(s)://host:port", base)
	}
	if next == nil {
		next = http.DefaultTransport
	}
	if userAgent == "" {
		userAgent = "tagger"
	}
	return &TokenAuth{
		host:      u.Host,
		next:      next,
		creds:     creds,
		tokenHTTP: newTokenHTTP(&http.Client{Transport: next, Timeout: 30 * time.Second}),
		userAgent: userAgent,
		tokens:    newAuthCache(),
	}, nil
}

// RoundTrip sends req with a token for its scope. On a 401 the cached token
// is dropped and, if req can be sent again (no body, or GetBody), it is
// retried once with a fresh token for the challenge's realm.
func (a *TokenAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != a.host {
		return a.next.RoundTrip(req)
	}
	scopes := RequestScopes(req.Method, req.URL)
	key := authKey{host: req.URL.Host, repo: strings.Join(scopes, " ")}
	h, err := a.header(req.Context(), req.URL, key, scopes, false)
	if err != nil {
		return nil, err
	}
	resp, err := a.next.RoundTrip(withAuthorization(req, h))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	a.tokens.drop(key)
	body, ok := replayable(req)
	if !ok {
		return resp, nil
	}
	if chs := challenges(resp.Header); len(chs) > 0 && chs[0].Scheme == auth.BearerAuth {
		a.setChallenge(chs[0])
	}
	drain(resp)
	h, err = a.header(req.Context(), req.URL, key, scopes, true)
	if err != nil {
		return nil, err
	}
	retry := withAuthorization(req, h)
	retry.Body = body
	return a.next.RoundTrip(retry)
}

// header returns the Authorization value for key, from the cache or a
// fresh token (one fetch per key at a time, however many requests wait).
func (a *TokenAuth) header(ctx context.Context, u *url.URL, key authKey, scopes []string, fresh bool) (string, error) {
	if !fresh {
		if h := a.tokens.get(key); h != "" {
			return h, nil
		}
	}
	v, err, _ := a.fetches.Do(key.host+"\x00"+key.repo, func() (any, error) {
		if h := a.tokens.get(key); h != "" {
			return h, nil
		}
		ch, err := a.bearerChallenge(ctx, u)
		if err != nil || ch == nil {
			return "", err
		}
		creds, err := a.creds(ctx)
		if err != nil {
			return "", err
		}
		tok, ttl, err := fetchScopedToken(ctx, a.tokenHTTP, a.userAgent, *ch, creds, scopes)
		if err != nil {
			return "", err
		}
		h := "Bearer " + tok
		a.tokens.put(key, h, ttl)
		return h, nil
	})
	if err != nil {
		return "", fmt.Errorf("authenticate to %s: %w", u.Host, err)
	}
	return v.(string), nil
}

func (a *TokenAuth) setChallenge(ch auth.Challenge) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.challenge, a.openUntil = &ch, time.Time{}
}

// openRecheck is how long a registry that asked for no token is believed.
const openRecheck = 30 * time.Second

// bearerChallenge returns the registry's Bearer challenge, asking GET /v2/
// without credentials the first time; nil when the registry wants none.
func (a *TokenAuth) bearerChallenge(ctx context.Context, u *url.URL) (*auth.Challenge, error) {
	a.mu.Lock()
	ch, open := a.challenge, time.Now().Before(a.openUntil)
	a.mu.Unlock()
	if ch != nil || open {
		return ch, nil
	}
	probe := url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/v2/"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, probe.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", a.userAgent)
	resp, err := a.next.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", probe.String(), err)
	}
	drain(resp)
	if resp.StatusCode == http.StatusOK {
		a.mu.Lock()
		a.openUntil = time.Now().Add(openRecheck)
		a.mu.Unlock()
		return nil, nil
	}
	for _, c := range challenges(resp.Header) {
		if c.Scheme == auth.BearerAuth && c.Parameters["realm"] != "" {
			a.setChallenge(c)
			return &c, nil
		}
	}
	return nil, fmt.Errorf("GET %s: answered %d without a Bearer challenge", probe.String(), resp.StatusCode)
}

// fetchScopedToken gets a token for scopes from a Bearer challenge's realm
// (Docker token spec: GET realm?service=&scope=, Basic credentials) and
// returns it with how long to use it.
func fetchScopedToken(ctx context.Context, hc *http.Client, userAgent string, ch auth.Challenge, creds Credentials, scopes []string) (string, time.Duration, error) {
	realm, err := url.Parse(ch.Parameters["realm"])
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") || realm.Host == "" {
		return "", 0, errors.New("registry sent a Bearer challenge with an unusable realm")
	}
	shown := realm.Scheme + "://" + realm.Host + realm.Path
	to, err := auth.GenerateTokenOptions(ctx, realm.Host, creds.Username, creds.Password, ch)
	if err != nil {
		return "", 0, fmt.Errorf("fetch token from %s: %w", shown, err)
	}
	to.Scopes = scopes
	capture := &tokenResponse{}
	start := time.Now()
	tr, err := auth.FetchToken(context.WithValue(ctx, tokenResponseKey{}, capture), hc,
		http.Header{"User-Agent": {userAgent}}, to)
	if err != nil {
		return "", 0, tokenError(shown, capture.header, err)
	}
	return tr.Token, tokenTTL(tr.ExpiresInSeconds, time.Since(start)), nil
}

// tokenTTL is how long to use a token that expires in expiresIn seconds,
// counted from when it was asked for (elapsed ago) and stopping a little
// early, so a cached token does not expire in flight.
func tokenTTL(expiresIn int, elapsed time.Duration) time.Duration {
	ttl := defaultTokenTTL
	if expiresIn > 0 {
		ttl = time.Duration(min(int64(expiresIn), int64(24*time.Hour/time.Second))) * time.Second
	}
	ttl -= min(ttl/10, 30*time.Second) + elapsed
	return max(ttl, 0)
}

// RequestScopes returns the token scopes a distribution API request needs,
// sorted: "repository:<name>:pull" for reads, ":pull,push" for uploads and
// manifest pushes, ":delete" for deletes of manifests and blobs, plus pull
// on the source repository of a cross-repository mount;
// "registry:catalog:*" for the catalog; none for the base /v2/.
func RequestScopes(method string, u *url.URL) []string {
	p := strings.TrimPrefix(u.Path, "/v2/")
	if p == u.Path || p == "" {
		return nil
	}
	if p == "_catalog" {
		return []string{"registry:catalog:*"}
	}
	repo, rest := splitRepo(p)
	if repo == "" {
		return nil
	}
	actions := "pull"
	upload := strings.HasPrefix(rest, "blobs/uploads")
	switch {
	case method == http.MethodGet || method == http.MethodHead:
		if upload {
			actions = "pull,push"
		}
	case method == http.MethodDelete && !upload:
		actions = "delete"
	default:
		actions = "pull,push"
	}
	scopes := []string{"repository:" + repo + ":" + actions}
	if from := u.Query().Get("from"); from != "" && upload && from != repo {
		scopes = append(scopes, "repository:"+from+":pull")
	}
	sort.Strings(scopes)
	return scopes
}

// splitRepo splits "<repo>/(manifests|blobs|tags)/..." at the last such
// component: a repository name may itself contain "blobs".
func splitRepo(p string) (repo, rest string) {
	best := -1
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/"} {
		if i := strings.LastIndex(p, kind); i > best {
			best = i
		}
	}
	if best <= 0 {
		return "", ""
	}
	return p[:best], p[best+1:]
}

// withAuthorization is a shallow copy of req with header h (a RoundTripper
// must not change its request).
func withAuthorization(req *http.Request, h string) *http.Request {
	r := req.Clone(req.Context())
	if h != "" {
		r.Header.Set("Authorization", h)
	}
	return r
}

// replayable returns a fresh body for sending req again, and whether it can be.
func replayable(req *http.Request) (io.ReadCloser, bool) {
	if req.Body == nil || req.Body == http.NoBody {
		return req.Body, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	b, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	return b, true
}
