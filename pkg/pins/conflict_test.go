package pins

import (
	"testing"
	"time"
)

func TestWinners(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	claims := []Claim{
		{Name: "b-newer", Image: "docker.io/library/nginx:1.27", Created: t0.Add(time.Minute)},
		{Name: "a-older", Image: "docker.io/library/nginx:1.27", Created: t0},
		{Name: "z-same-time", Image: "quay.io/x/y:1", Created: t0},
		{Name: "m-same-time", Image: "quay.io/x/y:1", Created: t0},
		{Name: "alone", Image: "ghcr.io/o/r:v1", Created: t0.Add(time.Hour)},
	}
	want := map[string]string{
		"docker.io/library/nginx:1.27": "a-older",
		"quay.io/x/y:1":                "m-same-time",
		"ghcr.io/o/r:v1":               "alone",
	}
	got := Winners(claims)
	if len(got) != len(want) {
		t.Fatalf("Winners = %v, want %v", got, want)
	}
	for img, name := range want {
		if got[img] != name {
			t.Errorf("winner of %s = %q, want %q", img, got[img], name)
		}
	}
	// Order of input must not matter.
	rev := make([]Claim, len(claims))
	for i, c := range claims {
		rev[len(claims)-1-i] = c
	}
	for img, name := range Winners(rev) {
		if want[img] != name {
			t.Errorf("reversed input: winner of %s = %q, want %q", img, name, want[img])
		}
	}
}
