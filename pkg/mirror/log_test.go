package mirror

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// TestLogging: bundled registry errors are warnings, requests are debug
// lines, and request headers (Authorization) are never logged.
func TestLogging(t *testing.T) {
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }))
	defer failing.Close()
	var out bytes.Buffer
	l := logrus.New()
	l.SetOutput(&out)
	l.SetLevel(logrus.DebugLevel)
	h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: failing.URL, Log: l.WithField("component", "mirror")})
	if err != nil {
		t.Fatal(err)
	}
	do(h, "GET", "/v2/library/nginx/blobs/"+blobDigest().String()+"?ns=docker.io", "Authorization", "Bearer s3cr3t")
	do(h, "GET", "/v2/library/nginx/manifests/1.27?ns=docker.io", "Authorization", "Bearer s3cr3t")
	log := out.String()
	if strings.Contains(log, "s3cr3t") {
		t.Errorf("log contains the Authorization header:\n%s", log)
	}
	if strings.Count(log, "level=warning") < 2 {
		t.Errorf("want warnings for the bundled registry's 500s:\n%s", log)
	}
	if !strings.Contains(log, "level=debug") || !strings.Contains(log, "result=error") {
		t.Errorf("want a debug line per request:\n%s", log)
	}

	// At info level the per-request line is not even built.
	out.Reset()
	l.SetLevel(logrus.InfoLevel)
	do(h, "HEAD", "/v2/library/nginx/manifests/1.27?ns=docker.io")
	if out.Len() != 0 {
		t.Errorf("logged at info level: %s", out.String())
	}
}
