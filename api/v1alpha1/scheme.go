package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// NewScheme is the scheme both tagger processes work with: the core
// Kubernetes types and tagger.dev. It lives with the API so the node agent
// does not link the controller to get it.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add client-go types to scheme: %w", err)
	}
	if err := AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add tagger.dev types to scheme: %w", err)
	}
	return s, nil
}
