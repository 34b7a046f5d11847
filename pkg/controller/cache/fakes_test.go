package cache

import (
	"context"
	"errors"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	d3 = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

var t0 = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

// fakeCopier records the copies and prunes asked of it; copyErr, when set,
// fails every copy, and onCopy runs inside each copy (a concurrent writer).
type fakeCopier struct {
	copies   []string // cache tags, in order
	prunes   [][]digest.Digest
	copyErr  error
	pruneErr error
	onCopy   func()
	progress imagecopy.Progress
}

func (f *fakeCopier) Copy(_ context.Context, _ pins.Reference, _ digest.Digest, _ registryclient.Credentials, tag string) (imagecopy.Progress, error) {
	f.copies = append(f.copies, tag)
	if f.onCopy != nil {
		f.onCopy()
	}
	return f.progress, f.copyErr
}

func (f *fakeCopier) Prune(ctx context.Context, _ string, drop []digest.Digest, keep imagecopy.KeepFunc) (imagecopy.PruneResult, error) {
	f.prunes = append(f.prunes, drop)
	if f.pruneErr != nil {
		return imagecopy.PruneResult{}, f.pruneErr
	}
	if _, err := keep(ctx); err != nil {
		return imagecopy.PruneResult{}, err
	}
	return imagecopy.PruneResult{}, nil
}

func newTag(name string, mutate func(*v1alpha1.Tag)) *v1alpha1.Tag {
	t := &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec:       v1alpha1.TagSpec{Image: "example.com/app:v1", Cache: true},
		Status: v1alpha1.TagStatus{ServedGeneration: 1, Generations: []v1alpha1.Generation{
			{Generation: 1, Image: "example.com/app:v1", Digest: d1},
		}},
	}
	if mutate != nil {
		mutate(t)
	}
	return t
}

// newReconciler builds a reconciler as a new leader would: nothing but the
// client (the stored Tags) and its seams.
func newReconciler(cl client.Client, cp Copier, clock *time.Time) (*Reconciler, *events.FakeRecorder) {
	rec := events.NewFakeRecorder(100)
	r := &Reconciler{Client: cl, APIReader: cl, Copier: cp, Recorder: rec, Log: logrus.New(), Now: func() time.Time { return *clock }}
	return r, rec
}

func hasEvent(evs []string, prefix string) bool {
	for _, e := range evs {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

var errRegistryDown = errors.New("dial tcp 127.0.0.1:1: connection refused")
