package registryauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DefaultAudience is the audience the chart projects the ServiceAccount
// tokens for: a token for the apiserver (or anyone else) is refused here,
// and one for here is useless elsewhere.
const DefaultAudience = "tagger-registry"

// DefaultTTL is the lifetime of an issued registry token.
const DefaultTTL = 5 * time.Minute

// Reviewer authenticates a ServiceAccount token for an audience and
// returns the user name it belongs to ("" when it is not valid).
type Reviewer interface {
	Review(ctx context.Context, token, audience string) (string, error)
}

// TokenReviewer reviews tokens with the apiserver's TokenReview API.
type TokenReviewer struct{ Client kubernetes.Interface }

// Review creates a TokenReview for token bound to audience.
func (r TokenReviewer) Review(ctx context.Context, token, audience string) (string, error) {
	tr, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create TokenReview: %w", err)
	}
	// The apiserver answers with the audiences the token is valid for
	// among those asked; check ours is one, not only that it authenticated.
	if !tr.Status.Authenticated || !slices.Contains(tr.Status.Audiences, audience) {
		return "", nil
	}
	return tr.Status.User.Username, nil
}

// Issuer is the token endpoint's http.Handler.
type Issuer struct {
	// Keys signs the tokens.
	Keys *KeyFile
	// Reviewer checks the presented ServiceAccount tokens.
	Reviewer Reviewer
	// Audience the ServiceAccount tokens must be bound to.
	Audience string
	// Service is the registry's auth.token.service: the aud of issued tokens.
	Service string
	// Name is the registry's auth.token.issuer: the iss of issued tokens.
	Name string
	// Pushers are the user names ("system:serviceaccount:ns:name") that may
	// pull, push and delete on every repository: the controller.
	Pushers []string
	// Pullers may only pull: the node agents.
	Pullers []string
	// TTL of issued tokens; default DefaultTTL.
	TTL time.Duration
	Log logrus.FieldLogger
}

// reviewTimeout bounds a TokenReview: a client waits on it.
const reviewTimeout = 10 * time.Second

// ServeHTTP implements the Docker token protocol's GET: Basic credentials,
// service and scope parameters. It answers 401 to anyone it does not know.
func (i *Issuer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "unsupported", "only GET is supported")
		return
	}
	q := req.URL.Query()
	if q.Get("service") != i.Service {
		writeError(w, http.StatusBadRequest, "invalid_request", "unknown service")
		return
	}
	_, token, ok := req.BasicAuth()
	if !ok || !looksLikeJWT(token) {
		i.unauthorized(w, "no service account token")
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), reviewTimeout)
	defer cancel()
	user, err := i.Reviewer.Review(ctx, token, i.Audience)
	if err != nil {
		i.Log.WithError(err).Warn("registry token request: token review failed")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "cannot review the token now")
		return
	}
	allowed := i.allowed(user)
	if allowed == nil {
		i.Log.WithField("user", user).Info("registry token refused: not an identity with registry access")
		i.unauthorized(w, "no access to the registry")
		return
	}
	access := grant(q["scope"], allowed)
	tok, exp, err := i.issue(user, access)
	if err != nil {
		i.Log.WithError(err).Error("registry token request: cannot sign")
		writeError(w, http.StatusInternalServerError, "server_error", "cannot sign a token")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   int(exp / time.Second),
		"issued_at":    time.Now().UTC().Format(time.RFC3339),
	})
}

// allowed returns the repository actions user may have, nil for none.
func (i *Issuer) allowed(user string) []string {
	switch {
	case user == "":
		return nil
	case slices.Contains(i.Pushers, user):
		return []string{"pull", "push", "delete"}
	case slices.Contains(i.Pullers, user):
		return []string{"pull"}
	}
	return nil
}

// resourceActions is an access claim entry of distribution's token format.
type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// grant is the access claim for the asked scopes: on repositories, the asked
// actions the identity has; nothing else (the catalog is nobody's).
func grant(scopes []string, allowed []string) []resourceActions {
	access := []resourceActions{}
	for _, s := range scopes {
		for _, one := range strings.Fields(s) {
			ra, ok := parseScope(one)
			if !ok || ra.Type != "repository" {
				continue
			}
			var got []string
			for _, a := range ra.Actions {
				if slices.Contains(allowed, a) && !slices.Contains(got, a) {
					got = append(got, a)
				}
			}
			if len(got) > 0 {
				ra.Actions = got
				access = append(access, ra)
			}
		}
	}
	return access
}

// parseScope splits "repository:team/app:pull,push"; the name is what lies
// between the first and the last colon (it may hold a registry port).
func parseScope(s string) (resourceActions, bool) {
	first, last := strings.Index(s, ":"), strings.LastIndex(s, ":")
	if first <= 0 || first == last || first+1 == last {
		return resourceActions{}, false
	}
	return resourceActions{Type: s[:first], Name: s[first+1 : last], Actions: strings.Split(s[last+1:], ",")}, true
}

// issue signs a token for user with access.
func (i *Issuer) issue(user string, access []resourceActions) (string, time.Duration, error) {
	s, err := i.Keys.Signer()
	if err != nil {
		return "", 0, err
	}
	ttl := i.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	now := time.Now()
	jti := make([]byte, 12)
	_, _ = rand.Read(jti)
	tok, err := s.Sign(map[string]any{
		"iss":    i.Name,
		"sub":    user,
		"aud":    i.Service,
		"exp":    now.Add(ttl).Unix(),
		"nbf":    now.Add(-5 * time.Second).Unix(),
		"iat":    now.Unix(),
		"jti":    hex.EncodeToString(jti),
		"access": access,
	})
	return tok, ttl, err
}

// unauthorized answers 401 with a Basic challenge, as the token spec asks
// of a token server that cannot authenticate the client.
func (i *Issuer) unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Basic realm="tagger registry token"`)
	writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", msg)
}

// looksLikeJWT rejects what cannot be a ServiceAccount token before it
// costs the apiserver a TokenReview.
func looksLikeJWT(s string) bool {
	return len(s) > 0 && len(s) <= 16<<10 && strings.Count(s, ".") == 2
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors":            []map[string]string{{"code": code, "message": msg}},
		"error":             code,
		"error_description": msg,
	})
}
