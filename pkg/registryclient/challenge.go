package registryclient

import "strings"

// challenge is one auth challenge of a WWW-Authenticate header.
type challenge struct {
	// Scheme is lower-cased: "bearer", "basic".
	Scheme string
	// Params holds the auth-params, names lower-cased, values unquoted.
	Params map[string]string
}

// parseChallenges parses WWW-Authenticate header values (RFC 9110 11.6.1):
// each may hold several comma-separated challenges, and parameter values
// may be quoted strings with commas and escapes inside, as in
// Bearer realm="https://auth.docker.io/token",scope="repository:a/b:pull,push".
func parseChallenges(headers []string) []challenge {
	var out []challenge
	for _, h := range headers {
		p := &parser{s: h}
		for {
			p.skip(", \t")
			scheme := p.token()
			if scheme == "" {
				if p.done() {
					break
				}
				p.i++ // not a token: skip the character and resync
				continue
			}
			c := challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
			p.params(c.Params)
			out = append(out, c)
		}
	}
	return out
}

type parser struct {
	s string
	i int
}

func (p *parser) done() bool { return p.i >= len(p.s) }

func (p *parser) skip(chars string) {
	for !p.done() && strings.IndexByte(chars, p.s[p.i]) >= 0 {
		p.i++
	}
}

// token reads an RFC 9110 token.
func (p *parser) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// params reads name=value pairs until the input ends or the next
// challenge's scheme (a token not followed by '=') begins.
func (p *parser) params(into map[string]string) {
	for {
		start := p.i
		p.skip(", \t")
		name := p.token()
		p.skip(" \t")
		if name == "" || p.done() || p.s[p.i] != '=' {
			p.i = start // the next challenge, or the end
			return
		}
		p.i++ // '='
		p.skip(" \t")
		var value string
		if !p.done() && p.s[p.i] == '"' {
			value = p.quoted()
		} else {
			value = p.token()
		}
		into[strings.ToLower(name)] = value
	}
}

// quoted reads a quoted-string starting at '"', handling backslash escapes;
// an unterminated string runs to the end.
func (p *parser) quoted() string {
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String()
		case c == '\\' && !p.done():
			b.WriteByte(p.s[p.i])
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
