package restart

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tagger-project/tagger/pkg/pins"
)

func TestMatchingContainers(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	c := func(name, image string) corev1.Container { return corev1.Container{Name: name, Image: image} }
	eph := func(name, image string) corev1.EphemeralContainer {
		return corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: image}}
	}
	tests := []struct {
		name  string
		image string // the Tag's image
		spec  corev1.PodSpec
		want  []string
	}{
		{"short docker hub name", "docker.io/library/nginx:1.27",
			corev1.PodSpec{Containers: []corev1.Container{c("web", "nginx:1.27")}}, []string{"web"}},
		{"tag written short, pod written long", "nginx:1.27",
			corev1.PodSpec{Containers: []corev1.Container{c("web", "docker.io/library/nginx:1.27")}}, []string{"web"}},
		{"index.docker.io is docker.io", "nginx:1.27",
			corev1.PodSpec{Containers: []corev1.Container{c("web", "index.docker.io/library/nginx:1.27")}}, []string{"web"}},
		{"no tag means latest", "nginx:latest",
			corev1.PodSpec{Containers: []corev1.Container{c("web", "nginx")}}, []string{"web"}},
		{"other tag", "nginx:1.27",
			corev1.PodSpec{Containers: []corev1.Container{c("web", "nginx:1.28")}}, nil},
		{"other registry, same path", "nginx:1.27",
			corev1.PodSpec{Containers: []corev1.Container{c("web", "quay.io/library/nginx:1.27")}}, nil},
		{"other repository", "nginx:1.27",
			corev1.PodSpec{Containers: []corev1.Container{c("web", "bitnami/nginx:1.27")}}, nil},
		{"registry with port", "localhost:5000/app:v1",
			corev1.PodSpec{Containers: []corev1.Container{c("app", "localhost:5000/app:v1"), c("other", "app:v1")}}, []string{"app"}},
		{"tag and digest is pinned already", "quay.io/org/app:v1",
			corev1.PodSpec{Containers: []corev1.Container{c("app", "quay.io/org/app:v1@"+digest)}}, nil},
		{"digest only", "quay.io/org/app:v1",
			corev1.PodSpec{Containers: []corev1.Container{c("app", "quay.io/org/app@"+digest)}}, nil},
		{"init container", "busybox:1.36",
			corev1.PodSpec{
				InitContainers: []corev1.Container{c("setup", "busybox:1.36")},
				Containers:     []corev1.Container{c("main", "alpine:3")},
			}, []string{"init:setup"}},
		{"ephemeral container", "busybox:1.36",
			corev1.PodSpec{
				Containers:          []corev1.Container{c("main", "alpine:3")},
				EphemeralContainers: []corev1.EphemeralContainer{eph("debug", "docker.io/library/busybox:1.36")},
			}, []string{"ephemeral:debug"}},
		{"several containers, some match", "nginx:1.27",
			corev1.PodSpec{
				InitContainers: []corev1.Container{c("warm", "nginx:1.27"), c("migrate", "app:v1")},
				Containers:     []corev1.Container{c("a", "nginx:1.27"), c("b", "redis:7"), c("c", "docker.io/library/nginx:1.27"), c("d", "nginx:1.27@"+digest)},
			}, []string{"init:warm", "a", "c"}},
		{"unparseable image", "nginx:1.27",
			corev1.PodSpec{Containers: []corev1.Container{c("bad", "NGINX:1.27"), c("empty", "")}}, nil},
		{"no containers", "nginx:1.27", corev1.PodSpec{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref, err := pins.ParseReference(tt.image)
			if err != nil {
				t.Fatal(err)
			}
			if got := MatchingContainers(&tt.spec, ref); !slices.Equal(got, tt.want) {
				t.Errorf("MatchingContainers = %q, want %q", got, tt.want)
			}
		})
	}
}

// The memo must not leak one image's verdict into another's.
func TestMatcherMemo(t *testing.T) {
	ref, _ := pins.ParseReference("nginx:1.27")
	m := newMatcher(ref)
	for range 2 {
		if !m.is("nginx:1.27") || m.is("nginx:1.28") || !m.is("docker.io/library/nginx:1.27") {
			t.Fatal("wrong verdict")
		}
	}
}
