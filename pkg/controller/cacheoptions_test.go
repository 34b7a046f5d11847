package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestCacheOptionsConfineSecrets: with a pull-secret namespace, the only
// namespace the manager's cache may hold Secrets of is that one; without,
// Secrets are not singled out (pullSecrets.scope=cluster).
func TestCacheOptionsConfineSecrets(t *testing.T) {
	o := DefaultOptions()
	o.PullSecretNamespace = "tagger-system"
	opts := cacheOptions(o)
	if opts.DefaultTransform == nil {
		t.Error("managedFields are no longer stripped from cached objects")
	}
	found := false
	for obj, by := range opts.ByObject {
		if _, ok := obj.(*corev1.Secret); !ok {
			continue
		}
		found = true
		if len(by.Namespaces) != 1 {
			t.Errorf("Secrets cached in namespaces %v, want only tagger-system", by.Namespaces)
		}
		if _, ok := by.Namespaces["tagger-system"]; !ok {
			t.Errorf("Secrets cached in namespaces %v, want tagger-system", by.Namespaces)
		}
	}
	if !found {
		t.Fatal("no cache restriction for Secrets with a pull-secret namespace")
	}
	o.PullSecretNamespace = ""
	if by := cacheOptions(o).ByObject; len(by) != 0 {
		t.Errorf("scope cluster: cache ByObject %v, want none", by)
	}
}
