package hooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
)

// secretEqual compares a presented credential with the configured secret in
// constant time. Both sides are hashed first so that neither the time nor
// the early length check of subtle.ConstantTimeCompare reveals the secret's
// length. An empty secret never matches.
func secretEqual(presented, secret string) bool {
	if secret == "" {
		return false
	}
	a := sha256.Sum256([]byte(presented))
	b := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// signaturePrefix starts GitHub's X-Hub-Signature-256 header value.
const signaturePrefix = "sha256="

// validSignature reports whether header is "sha256=<hex HMAC-SHA256 of body
// keyed with secret>", GitHub's X-Hub-Signature-256. The comparison is
// constant time (hmac.Equal).
func validSignature(header string, body []byte, secret string) bool {
	if secret == "" || !strings.HasPrefix(header, signaturePrefix) {
		return false
	}
	got, err := hex.DecodeString(strings.TrimPrefix(header, signaturePrefix))
	if err != nil || len(got) != sha256.Size {
		return false
	}
	return hmac.Equal(got, sign(body, secret))
}

// sign is the HMAC-SHA256 of body keyed with secret.
func sign(body []byte, secret string) []byte {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return mac.Sum(nil)
}

// Signature returns the X-Hub-Signature-256 header value GitHub sends for
// body; handy for tests and for CI systems that want to sign like GitHub.
func Signature(body []byte, secret string) string {
	return signaturePrefix + hex.EncodeToString(sign(body, secret))
}
