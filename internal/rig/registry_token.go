package rig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"
)

// What distribution v3.1.2's token access controller (registry/auth/token)
// checks, and so what the token server produces:
//   - the JWS header carries either x5c (a chain verifying against
//     rootcertbundle), a jwk, or a kid naming a trusted key; we send x5c with
//     the self-signed root itself, which avoids its JWK-thumbprint kid scheme;
//   - alg is one of its default list (we use ES256);
//   - iss equals auth.token.issuer, aud contains auth.token.service,
//     exp and nbf hold within 60s leeway (iat and jti are not checked);
//   - access lists {type, name, actions} covering every requested action.
const (
	tokenService    = "registrytest"
	tokenIssuer     = "registrytest-token-issuer"
	defaultTokenTTL = 5 * time.Minute
)

type tokenServer struct {
	srv       *httptest.Server
	key       *ecdsa.PrivateKey
	certDER   []byte
	certPEM   []byte
	users     map[string]string
	anonymous bool
	ttl       time.Duration
	requests  atomic.Int64
	// service and issuer are the registry's auth.token names (tokenService
	// and tokenIssuer, or RegistryOptions.External's).
	service, issuer string
}

func newTokenServer(users map[string]string, anonymousPull bool, ttl time.Duration) (*tokenServer, error) {
	if ttl <= 0 {
		ttl = defaultTokenTTL
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate token signing key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "registrytest token signer"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create token signing certificate: %w", err)
	}
	ts := &tokenServer{
		key:       key,
		certDER:   der,
		certPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		users:     users,
		anonymous: anonymousPull,
		ttl:       ttl,
		service:   tokenService,
		issuer:    tokenIssuer,
	}
	ts.srv = httptest.NewServer(http.HandlerFunc(ts.serve))
	return ts, nil
}

func (ts *tokenServer) Close() { ts.srv.Close() }

func (ts *tokenServer) realm() string { return ts.srv.URL + "/token" }

// serve implements the Docker token protocol: GET with optional Basic
// credentials, and the OAuth2 password grant containerd POSTs when it has
// credentials.
func (ts *tokenServer) serve(w http.ResponseWriter, req *http.Request) {
	ts.requests.Add(1)
	if req.URL.Path != "/token" {
		http.NotFound(w, req)
		return
	}
	var (
		user, pass string
		hasCreds   bool
		scopes     []string
		service    string
	)
	switch req.Method {
	case http.MethodGet:
		user, pass, hasCreds = req.BasicAuth()
		service = req.URL.Query().Get("service")
		scopes = req.URL.Query()["scope"]
	case http.MethodPost:
		if err := req.ParseForm(); err != nil {
			tokenError(w, http.StatusBadRequest, "invalid_request", "bad form")
			return
		}
		if gt := req.PostForm.Get("grant_type"); gt != "password" {
			tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "only the password grant is supported")
			return
		}
		user, pass, hasCreds = req.PostForm.Get("username"), req.PostForm.Get("password"), true
		service = req.PostForm.Get("service")
		scopes = req.PostForm["scope"]
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if service != ts.service {
		tokenError(w, http.StatusBadRequest, "invalid_request", "unknown service")
		return
	}
	subject := ""
	if hasCreds {
		want, ok := ts.users[user]
		if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="registrytest token"`)
			tokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid username or password")
			return
		}
		subject = user
	}

	access := []resourceActions{}
	for _, s := range scopes {
		for _, one := range strings.Fields(s) {
			ra, ok := parseScope(one)
			if !ok {
				continue
			}
			ra.Actions = ts.grant(subject, ra.Actions)
			if len(ra.Actions) > 0 {
				access = append(access, ra)
			}
		}
	}
	now := time.Now()
	tok, err := ts.sign(subject, access, now)
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   int(ts.ttl / time.Second),
		"issued_at":    now.UTC().Format(time.RFC3339),
	})
}

// grant filters the asked actions: an authenticated user gets what it asks,
// an anonymous one at most pull, and only when anonymous pull is allowed.
func (ts *tokenServer) grant(subject string, asked []string) []string {
	var out []string
	for _, a := range asked {
		switch {
		case subject != "":
			out = append(out, a)
		case ts.anonymous && a == "pull":
			out = append(out, a)
		}
	}
	return out
}

type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// parseScope splits "repository:library/nginx:pull,push" into type, name
// and actions; the name is everything between the first and last colon.
func parseScope(s string) (resourceActions, bool) {
	first := strings.Index(s, ":")
	last := strings.LastIndex(s, ":")
	if first < 0 || first == last {
		return resourceActions{}, false
	}
	return resourceActions{
		Type:    s[:first],
		Name:    s[first+1 : last],
		Actions: strings.Split(s[last+1:], ","),
	}, true
}

// sign builds an ES256 JWS by hand: base64url(header).base64url(claims).sig,
// the signature being R||S, 32 bytes each (RFC 7518 3.4).
func (ts *tokenServer) sign(subject string, access []resourceActions, now time.Time) (string, error) {
	header := map[string]any{
		"typ": "JWT",
		"alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)},
	}
	claims := map[string]any{
		"iss":    ts.issuer,
		"sub":    subject,
		"aud":    ts.service,
		"exp":    now.Add(ts.ttl).Unix(),
		"nbf":    now.Add(-time.Second).Unix(),
		"iat":    now.Unix(),
		"jti":    randomHex(8),
		"access": access,
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("encode token header: %w", err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode token claims: %w", err)
	}
	input := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(input))
	asn1Sig, err := ecdsa.SignASN1(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	sig, err := asn1ToRS(asn1Sig)
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// asn1ToRS converts an ASN.1 ECDSA-Sig-Value into JWS's fixed-size R||S.
func asn1ToRS(der []byte) ([]byte, error) {
	var v struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &v); err != nil {
		return nil, fmt.Errorf("decode ecdsa signature: %w", err)
	}
	out := make([]byte, 64)
	v.R.FillBytes(out[:32])
	v.S.FillBytes(out[32:])
	return out, nil
}

func tokenError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors":            []map[string]string{{"code": code, "message": msg}},
		"error":             code,
		"error_description": msg,
	})
}
