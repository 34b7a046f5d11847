package webhooks

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
)

// TestSecretRotation: the controller re-reads its webhook Secret, so a
// rotated token takes effect without a restart and the old one stops
// working; a Secret that becomes unreadable keeps the token in use.
func TestSecretRotation(t *testing.T) {
	ctx := context.Background()
	kc := rig.NewKube(t)
	c := kc.Client
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "tagger-webhooks"},
		Data:       map[string][]byte{"generic": []byte("old-token")},
	}
	if err := c.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	o := inproc.ControllerOptions()
	o.WebhookAddr = rig.FreeAddr(t)
	o.WebhookSecret = "default/tagger-webhooks"
	o.WebhookSecretRefresh = 200 * time.Millisecond
	inproc.RunController(kc, o)

	// No Tag matches the image, so an accepted token answers 404 and a
	// refused one 401: the status tells which secret is in use.
	status := func(token string) int {
		resp, err := http.Post(fmt.Sprintf("http://%s/hooks/generic/%s", o.WebhookAddr, token), "application/json",
			strings.NewReader(`{"image":"registry.example.com/team/app:v1"}`))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	inUse := func(what, token string) {
		t.Helper()
		rig.WaitFor(t, 30*time.Second, what, func() (bool, string) {
			old, cur := status("old-token"), status("new-token")
			want := map[string][2]int{"old-token": {404, 401}, "new-token": {401, 404}}[token]
			return old == want[0] && cur == want[1], fmt.Sprintf("old token %d, new token %d", old, cur)
		})
	}
	inUse("the first secret in use", "old-token")

	sec.Data["generic"] = []byte("new-token")
	if err := c.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	inUse("the rotated secret in use", "new-token")

	// A deleted Secret (a failed refresh) keeps the secrets in use: wait for
	// several refresh periods past the delete, observed through the API.
	if err := c.Delete(ctx, sec); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * o.WebhookSecretRefresh)
	for time.Now().Before(deadline) {
		if got := status("new-token"); got != http.StatusNotFound {
			t.Fatalf("after the Secret was deleted the rotated token answers %d, want 404 (still in use)", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
