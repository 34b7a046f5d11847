package mirror

import (
	// digest.Algorithm needs the hash functions linked in to verify content.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"net/url"
	"strings"
)

// Name, tag and digest grammar of the distribution spec, hand-written because
// these checks run on every request, including the HEAD hot path.

// maxNameLength is distribution's limit on a repository name.
const maxNameLength = 255

// validRepository reports whether name is a repository name: path
// components [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)* joined by '/'. It
// rejects "." and ".." components, empty components and '%', so no
// traversal, raw or encoded, gets through.
func validRepository(name string) bool {
	if name == "" || len(name) > maxNameLength {
		return false
	}
	for {
		comp, rest, more := strings.Cut(name, "/")
		if !validComponent(comp) {
			return false
		}
		if !more {
			return true
		}
		name = rest
	}
}

// validComponent checks one path component of a repository name.
func validComponent(s string) bool {
	if s == "" || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); {
		if isAlnum(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && !isAlnum(s[j]) {
			j++
		}
		if !validSeparator(s[i:j]) {
			return false
		}
		i = j
	}
	return true
}

// validSeparator: ".", "_", "__" or one or more '-'.
func validSeparator(sep string) bool {
	switch sep {
	case ".", "_", "__":
		return true
	}
	for i := 0; i < len(sep); i++ {
		if sep[i] != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

func isWord(c byte) bool { return isAlnum(c) || 'A' <= c && c <= 'Z' || c == '_' }

// validTag reports whether s is a tag: [\w][\w.-]{0,127}.
func validTag(s string) bool {
	if s == "" || len(s) > 128 || !isWord(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isWord(c) && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// validDigest reports whether s is "<algorithm>:<lowercase hex>" for an
// algorithm go-digest can verify (sha256, sha384, sha512) with the
// algorithm's length. Registries accept no other.
func validDigest(s string) bool {
	alg, hex, ok := strings.Cut(s, ":")
	if !ok {
		return false
	}
	var n int
	switch alg {
	case "sha256":
		n = 64
	case "sha384":
		n = 96
	case "sha512":
		n = 128
	default:
		return false
	}
	if len(hex) != n {
		return false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// queryNS returns the ns query parameter of a raw query, without building a
// url.Values map. containerd encodes it with url.Values.Encode, so a port
// arrives as "localhost%3A5000".
func queryNS(rawQuery string) (string, bool) {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		v, ok := strings.CutPrefix(kv, "ns=")
		if !ok {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				return "", false
			}
			v = u
		}
		return v, v != ""
	}
	return "", false
}
