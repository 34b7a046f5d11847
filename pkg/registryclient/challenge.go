package registryclient

import (
	"net/http"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker/auth"
)

// challenges returns the auth challenges of a response's WWW-Authenticate
// headers, parsed by containerd (bearer first, then digest, then basic;
// unknown schemes dropped). containerd reads one challenge per header
// value, while RFC 9110 11.6.1 lets a value list several
// (`Basic realm="r", Bearer realm="..."`), so each value is first split
// where a new challenge begins.
func challenges(h http.Header) []auth.Challenge {
	split := http.Header{}
	for _, v := range h.Values("WWW-Authenticate") {
		for _, c := range splitChallenges(v) {
			split.Add("WWW-Authenticate", c)
		}
	}
	return auth.ParseAuthHeader(split)
}

// schemeName names a challenge's scheme for error messages.
func schemeName(s auth.AuthenticationScheme) string {
	switch s {
	case auth.BasicAuth:
		return "basic"
	case auth.DigestAuth:
		return "digest"
	case auth.BearerAuth:
		return "bearer"
	}
	return "unknown"
}

// splitChallenges splits a WWW-Authenticate value at the commas outside
// quoted strings that are followed by a new scheme: a token not followed by
// '=' (an auth-param's name is).
func splitChallenges(v string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++ // skip the escaped character
		case c == '"':
			quoted = !quoted
		case !quoted && c == ',' && startsChallenge(v[i+1:]):
			out = appendTrimmed(out, v[start:i])
			start = i + 1
		}
	}
	return appendTrimmed(out, v[start:])
}

// startsChallenge reports whether s, the text after a comma, begins with an
// auth-scheme rather than an auth-param.
func startsChallenge(s string) bool {
	s = strings.TrimLeft(s, " \t")
	n := strings.IndexFunc(s, func(r rune) bool { return !isTokenChar(r) })
	if n == 0 {
		return false // another comma, a quote, or garbage: not a scheme
	}
	if n < 0 {
		return true // a bare scheme ends the value
	}
	return !strings.HasPrefix(strings.TrimLeft(s[n:], " \t"), "=")
}

func appendTrimmed(out []string, s string) []string {
	if s = strings.Trim(s, " \t,"); s != "" {
		out = append(out, s)
	}
	return out
}

// isTokenChar reports whether r may appear in an RFC 9110 token.
func isTokenChar(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}
