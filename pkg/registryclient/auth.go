package registryclient

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker/auth"
	remoteserrors "github.com/containerd/containerd/v2/core/remotes/errors"
)

const (
	// defaultTokenTTL is what the Docker token spec says to assume when a
	// token response has no expires_in.
	defaultTokenTTL = 60 * time.Second
	// basicTTL bounds how long a host is remembered as wanting Basic auth.
	basicTTL       = time.Hour
	maxTokenBody   = 1 << 20
	pruneThreshold = 256
)

// authKey identifies cached authorization: a token is only good for the
// host and repository it was issued for, and for the credentials that got it.
type authKey struct {
	host, repo string
	creds      [sha256.Size]byte // a hash, so the map holds no second copy of the password
}

func newAuthKey(host, repo string, c Credentials) authKey {
	return authKey{host: host, repo: repo, creds: sha256.Sum256([]byte(c.Username + "\x00" + c.Password))}
}

type cachedAuth struct {
	header  string // the Authorization header value
	expires time.Time
}

// authCache remembers the Authorization header to send per authKey, so
// repeated checks cost one request instead of a 401 round trip and a token
// fetch each time.
type authCache struct {
	mu      sync.Mutex
	entries map[authKey]cachedAuth
	now     func() time.Time
}

func newAuthCache() *authCache {
	return &authCache{entries: map[authKey]cachedAuth{}, now: time.Now}
}

func (a *authCache) get(k authKey) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[k]
	if !ok || !a.now().Before(e.expires) {
		return ""
	}
	return e.header
}

func (a *authCache) put(k authKey, header string, ttl time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if len(a.entries) >= pruneThreshold {
		for k, e := range a.entries {
			if !now.Before(e.expires) {
				delete(a.entries, k)
			}
		}
	}
	a.entries[k] = cachedAuth{header: header, expires: now.Add(ttl)}
}

func (a *authCache) drop(k authKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.entries, k)
}

// authorize answers a 401's challenges: it returns the Authorization header
// to retry with ("" when no challenge can be met, e.g. Basic without
// credentials) and caches it.
func (c *Client) authorize(ctx context.Context, k authKey, repo string, creds Credentials, chs []auth.Challenge) (string, error) {
	var basic bool
	for _, ch := range chs {
		switch ch.Scheme {
		case auth.BearerAuth:
			if ch.Parameters["realm"] == "" {
				continue
			}
			tok, ttl, err := c.fetchToken(ctx, ch, repo, creds)
			if err != nil {
				return "", err
			}
			h := "Bearer " + tok
			c.auth.put(k, h, ttl)
			return h, nil
		case auth.BasicAuth:
			basic = true
		}
	}
	if basic && !creds.IsZero() {
		h := "Basic " + base64.StdEncoding.EncodeToString([]byte(creds.Username+":"+creds.Password))
		c.auth.put(k, h, basicTTL)
		return h, nil
	}
	return "", nil
}

// fetchToken gets a pull token for repo from a Bearer challenge's realm with
// containerd's FetchToken (Docker token spec: GET realm?service=&scope=,
// Basic credentials if any). The scope is always pull on repo, whatever the
// challenge asked for: tagger only reads upstream.
func (c *Client) fetchToken(ctx context.Context, ch auth.Challenge, repo string, creds Credentials) (string, time.Duration, error) {
	realm, err := url.Parse(ch.Parameters["realm"])
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") || realm.Host == "" {
		return "", 0, errors.New("registry sent a Bearer challenge with an unusable realm")
	}
	shown := realm.Scheme + "://" + realm.Host + realm.Path // no query in messages
	// Credentials only travel in clear text to hosts configured as plain HTTP.
	if realm.Scheme == "http" && !creds.IsZero() && !c.plainHTTP(realm.Host) {
		return "", 0, fmt.Errorf("fetch token from %s: refusing to send credentials over plain HTTP", shown)
	}
	return fetchScopedToken(ctx, c.tokenHTTP, c.userAgent, ch, creds, []string{"repository:" + repo + ":pull"})
}

// tokenError maps FetchToken's error to ours: an HTTP error status of the
// token service becomes a statusError (so *Error carries its status and
// Retry-After, and its OCI error codes, never its raw body); containerd's
// message would show the request URL with its query.
func tokenError(shown string, header http.Header, err error) error {
	var se remoteserrors.ErrUnexpectedStatus
	if !errors.As(err, &se) {
		return fmt.Errorf("fetch token from %s: %w", shown, err)
	}
	resp := &http.Response{StatusCode: se.StatusCode, Header: header}
	return fmt.Errorf("fetch token: %w", newStatusError(http.MethodGet, shown, resp, se.Body))
}

// tokenResponseKey marks a token request's context with the *tokenResponse
// that tokenTransport fills in: containerd's status error keeps the body
// but not the headers, and Retry-After is in the headers.
type tokenResponseKey struct{}

type tokenResponse struct{ header http.Header }

// tokenTransport records each token response's headers for tokenError and
// bounds its body (containerd decodes the whole of it).
type tokenTransport struct{ next http.RoundTripper }

func (t tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if r, ok := req.Context().Value(tokenResponseKey{}).(*tokenResponse); ok {
		r.header = resp.Header.Clone()
	}
	resp.Body = limitedBody{io.LimitReader(resp.Body, maxTokenBody), resp.Body}
	return resp, nil
}

type limitedBody struct {
	io.Reader
	io.Closer
}

// newTokenHTTP is hc with tokenTransport around its transport.
func newTokenHTTP(hc *http.Client) *http.Client {
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c := *hc
	c.Transport = tokenTransport{next: next}
	return &c
}
