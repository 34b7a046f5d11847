package registryauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"time"
)

// Signer signs JWTs with one private key (RSA: RS256, ECDSA P-256: ES256)
// and names it in the header by the JWK thumbprint distribution computes
// for every certificate of its rootcertbundle.
type Signer struct {
	key crypto.Signer
	alg string
	kid string
}

// ParseSigner reads a PEM private key (PKCS#1, PKCS#8 or SEC 1).
func ParseSigner(pemBytes []byte) (*Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("signing key: no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return &Signer{key: k, alg: "RS256", kid: Thumbprint(&k.PublicKey)}, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("signing key: only ECDSA P-256 is supported")
		}
		return &Signer{key: k, alg: "ES256", kid: Thumbprint(&k.PublicKey)}, nil
	}
	return nil, fmt.Errorf("signing key: unsupported key type %T", key)
}

// KeyID is the key's thumbprint, the JWS kid.
func (s *Signer) KeyID() string { return s.kid }

// Sign returns the compact JWS of claims.
func (s *Signer) Sign(claims any) (string, error) {
	hb, err := json.Marshal(map[string]string{"typ": "JWT", "alg": s.alg, "kid": s.kid})
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	input := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(input))
	sig, err := s.key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	if s.alg == "ES256" {
		if sig, err = asn1ToRS(sig); err != nil {
			return "", err
		}
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// asn1ToRS converts an ASN.1 ECDSA signature into JWS's R||S (RFC 7518 3.4).
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

// Thumbprint is distribution's key ID for a public key: base64url (no
// padding) of the SHA-256 of its canonical JWK (RFC 7638 member order).
func Thumbprint(pub crypto.PublicKey) string {
	var j string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		e := big.NewInt(int64(k.E)).Bytes()
		j = fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, b64(e), b64(k.N.Bytes()))
	case *ecdsa.PublicKey:
		j = fmt.Sprintf(`{"crv":"%s","kty":"EC","x":"%s","y":"%s"}`, k.Curve.Params().Name, b64(k.X.Bytes()), b64(k.Y.Bytes()))
	default:
		return ""
	}
	sum := sha256.Sum256([]byte(j))
	return b64(sum[:])
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// KeyFile is a Signer read from a file and read again when the file
// changes (checked at most every reloadEvery), so a key switch in the
// mounted Secret takes effect without a restart.
type KeyFile struct {
	path string
	now  func() time.Time

	mu      sync.Mutex
	signer  *Signer
	modTime time.Time
	checked time.Time
}

const reloadEvery = 10 * time.Second

// NewKeyFile reads the key at path; it fails when the file is unusable.
func NewKeyFile(path string) (*KeyFile, error) {
	k := &KeyFile{path: path, now: time.Now}
	if _, err := k.Signer(); err != nil {
		return nil, err
	}
	return k, nil
}

// Signer returns the current key. A file that became unreadable or invalid
// keeps the last good key (and the error is returned only when there is none).
func (k *KeyFile) Signer() (*Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if k.signer != nil && now.Sub(k.checked) < reloadEvery {
		return k.signer, nil
	}
	k.checked = now
	fi, err := os.Stat(k.path)
	if err == nil && k.signer != nil && fi.ModTime().Equal(k.modTime) {
		return k.signer, nil
	}
	var s *Signer
	if err == nil {
		var b []byte
		if b, err = os.ReadFile(k.path); err == nil {
			s, err = ParseSigner(b)
		}
	}
	if err != nil {
		if k.signer != nil {
			return k.signer, nil
		}
		return nil, fmt.Errorf("load token signing key %s: %w", k.path, err)
	}
	k.signer, k.modTime = s, fi.ModTime()
	return s, nil
}
