package imagecopy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
)

func TestVerifier(t *testing.T) {
	good := bytes.Repeat([]byte("tagger"), 10000)
	d := digest.FromBytes(good)
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 0xff
	cases := []struct {
		name    string
		content []byte
		want    digest.Digest
		size    int64
		err     error
		msg     string
		// whole: the first size bytes are the right content, so handing
		// them all on before failing is fine.
		whole bool
	}{
		{name: "good", content: good, want: d, size: int64(len(good))},
		{name: "empty", content: nil, want: digest.FromBytes(nil), size: 0},
		{name: "flipped byte", content: flipped, want: d, size: int64(len(good)), err: ErrDigestMismatch, msg: "digest mismatch (got " + digest.FromBytes(flipped).String() + ")"},
		{name: "longer", content: append(bytes.Clone(good), 'x'), want: d, size: int64(len(good)), err: ErrSizeMismatch, msg: "more than", whole: true},
		{name: "shorter", content: good[:len(good)-1], want: d, size: int64(len(good)), err: ErrSizeMismatch, msg: "size mismatch (got"},
		{name: "empty but wrong digest", content: nil, want: d, size: 0, err: ErrDigestMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// OneByteReader: the failing read must be the one that completes
			// the content, whatever the chunking.
			for _, r := range []io.Reader{bytes.NewReader(tc.content), iotest.OneByteReader(bytes.NewReader(tc.content))} {
				v := newVerifier(r, tc.want, tc.size)
				var out bytes.Buffer
				_, err := io.Copy(&out, v)
				if tc.err == nil {
					if err != nil {
						t.Fatalf("copy: %v", err)
					}
					if !bytes.Equal(out.Bytes(), tc.content) {
						t.Fatalf("content changed")
					}
					continue
				}
				if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("err = %v, want %v containing %q", err, tc.err, tc.msg)
				}
				if v.contentErr() == nil {
					t.Fatalf("contentErr() = nil")
				}
				// The consumer never saw the whole (bad) content.
				if !tc.whole && int64(out.Len()) >= tc.size && tc.size > 0 {
					t.Fatalf("consumer got %d bytes of %d despite the failure", out.Len(), tc.size)
				}
			}
		})
	}
}
