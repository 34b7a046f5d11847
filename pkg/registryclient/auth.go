package registryclient

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
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
func (c *Client) authorize(ctx context.Context, k authKey, repo string, creds Credentials, chs []challenge) (string, error) {
	var basic bool
	for _, ch := range chs {
		switch ch.Scheme {
		case "bearer":
			if ch.Params["realm"] == "" {
				continue
			}
			tok, ttl, err := c.fetchToken(ctx, ch, repo, creds)
			if err != nil {
				return "", err
			}
			h := "Bearer " + tok
			c.auth.put(k, h, ttl)
			return h, nil
		case "basic":
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

// fetchToken gets a pull token for repo from a Bearer challenge's realm
// (Docker token spec: GET realm?service=&scope=, Basic credentials if any).
func (c *Client) fetchToken(ctx context.Context, ch challenge, repo string, creds Credentials) (string, time.Duration, error) {
	realm, err := url.Parse(ch.Params["realm"])
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") || realm.Host == "" {
		return "", 0, errors.New("registry sent a Bearer challenge with an unusable realm")
	}
	shown := realm.Scheme + "://" + realm.Host + realm.Path // no query in messages
	// Credentials only travel in clear text to hosts configured as plain HTTP.
	if realm.Scheme == "http" && !creds.IsZero() && !c.plainHTTP(realm.Host) {
		return "", 0, fmt.Errorf("fetch token from %s: refusing to send credentials over plain HTTP", shown)
	}
	q := realm.Query()
	if s := ch.Params["service"]; s != "" {
		q.Set("service", s)
	}
	q.Set("scope", "repository:"+repo+":pull")
	realm.RawQuery = q.Encode()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return "", 0, fmt.Errorf("fetch token from %s: %w", shown, err)
	}
	req.Header.Set("User-Agent", c.userAgent)
	if !creds.IsZero() {
		req.SetBasicAuth(creds.Username, creds.Password)
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("fetch token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return "", 0, fmt.Errorf("fetch token: %w", newStatusError(http.MethodGet, shown, resp, body))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))
	if err != nil {
		return "", 0, fmt.Errorf("fetch token from %s: read response: %w", shown, err)
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", 0, fmt.Errorf("fetch token from %s: decode response: %w", shown, err)
	}
	tok := tr.Token
	if tok == "" {
		tok = tr.AccessToken
	}
	if tok == "" {
		return "", 0, fmt.Errorf("fetch token from %s: response has no token", shown)
	}
	ttl := defaultTokenTTL
	if tr.ExpiresIn > 0 {
		ttl = time.Duration(min(tr.ExpiresIn, int64(24*time.Hour/time.Second))) * time.Second
	}
	// Count from when we asked, and stop using it a little early, so a
	// cached token does not expire in flight.
	ttl -= min(ttl/10, 30*time.Second) + time.Since(start)
	return tok, max(ttl, 0), nil
}
