package imagecopy

import (
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/tagger-project/tagger/pkg/registryclient"
)

// ErrDigestMismatch is matched (errors.Is) by copy errors for content that
// does not hash to its digest; it is registryclient.ErrDigestMismatch, so callers
// can test for either.
var ErrDigestMismatch = registryclient.ErrDigestMismatch

// ErrSizeMismatch is matched by copy errors for content longer or shorter
// than its descriptor says.
var ErrSizeMismatch = errors.New("size mismatch")

// contentError is a verification failure with a short message of its own
// ("digest mismatch (got sha256:...)") that still matches its sentinel.
type contentError struct {
	msg  string
	kind error
}

func (e *contentError) Error() string { return e.msg }
func (e *contentError) Unwrap() error { return e.kind }

// verifier passes a blob through while hashing and counting it. It fails
// the read that would take the content past size, and the read that
// completes size bytes when the digest is wrong, returning no bytes with the
// error: the consumer (an HTTP PUT with Content-Length size) never gets the
// last byte, so the request is aborted short rather than sent whole.
type verifier struct {
	r        io.Reader
	want     digest.Digest
	size, n  int64
	h        hash.Hash
	verified bool
	err      error
}

// newVerifier wraps r; want must be valid (digest.Digest.Validate).
func newVerifier(r io.Reader, want digest.Digest, size int64) *verifier {
	return &verifier{r: r, want: want, size: size, h: want.Algorithm().Hash()}
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	if n > 0 {
		if v.n+int64(n) > v.size {
			return 0, v.fail(&contentError{
				msg:  fmt.Sprintf("size mismatch (more than the %d bytes of its descriptor)", v.size),
				kind: ErrSizeMismatch,
			})
		}
		v.h.Write(p[:n])
		v.n += int64(n)
		if v.n == v.size {
			if err := v.check(); err != nil {
				return 0, err
			}
		}
	}
	switch {
	case err == io.EOF:
		if v.n < v.size {
			return 0, v.fail(&contentError{
				msg:  fmt.Sprintf("size mismatch (got %d bytes, want %d)", v.n, v.size),
				kind: ErrSizeMismatch,
			})
		}
		if cerr := v.check(); cerr != nil { // the empty blob
			return 0, cerr
		}
	case err != nil:
		v.err = err
	}
	return n, err
}

// check compares the digest once all size bytes are in.
func (v *verifier) check() error {
	if v.verified {
		return nil
	}
	v.verified = true
	if got := digest.NewDigest(v.want.Algorithm(), v.h); got != v.want {
		return v.fail(&contentError{msg: fmt.Sprintf("digest mismatch (got %s)", got), kind: ErrDigestMismatch})
	}
	return nil
}

func (v *verifier) fail(err error) error {
	v.err = err
	return err
}

// contentErr is the verification failure, if any (not a read error of the
// underlying reader).
func (v *verifier) contentErr() error {
	var ce *contentError
	if errors.As(v.err, &ce) {
		return v.err
	}
	return nil
}
