// Package pullsecret reads the upstream credentials a Tag names in
// spec.pullSecretRef, for the checks and for the cache copies, from the one
// namespace pull Secrets are confined to (docs/install.md, "Pull secrets").
package pullsecret

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// Error says the pull Secret, not the upstream, is what failed.
type Error struct{ Err error }

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ErrNotAllowed is wrapped by the Error for a Secret outside the allowed
// namespace: the controller does not even try to read it (and its RBAC
// would not let it).
var ErrNotAllowed = errors.New("pull secret not allowed")

// Source reads pull Secrets.
type Source struct {
	// Reader reads the one Secret a Tag names. It should be uncached, so
	// the controller never lists or watches Secrets (its RBAC grants get only).
	Reader client.Reader
	// Namespace is the only namespace pull Secrets are read from ("":
	// any namespace, the chart's pullSecrets.scope=cluster).
	Namespace string
}

// Credentials reads the dockerconfigjson Secret the Tag names, if any, and
// returns its credentials for ref's registry.
func (s Source) Credentials(ctx context.Context, tag *v1alpha1.Tag, ref pins.Reference) (registryclient.Credentials, error) {
	sr := tag.Spec.PullSecretRef
	if sr == nil {
		return registryclient.Credentials{}, nil
	}
	if s.Namespace != "" && sr.Namespace != s.Namespace {
		return registryclient.Credentials{}, &Error{fmt.Errorf("%w: spec.pullSecretRef names %s/%s, but this controller reads pull secrets only from namespace %q; create the Secret there and name it",
			ErrNotAllowed, sr.Namespace, sr.Name, s.Namespace)}
	}
	var sec corev1.Secret
	if err := s.Reader.Get(ctx, client.ObjectKey{Namespace: sr.Namespace, Name: sr.Name}, &sec); err != nil {
		return registryclient.Credentials{}, &Error{fmt.Errorf("read pull secret %s/%s: %w", sr.Namespace, sr.Name, err)}
	}
	data, ok := sec.Data[corev1.DockerConfigJsonKey]
	if !ok {
		return registryclient.Credentials{}, &Error{fmt.Errorf("pull secret %s/%s has no %s key (want type %s)", sr.Namespace, sr.Name, corev1.DockerConfigJsonKey, corev1.SecretTypeDockerConfigJson)}
	}
	creds, found, err := registryclient.CredentialsFromDockerConfig(data, ref.Registry)
	if err != nil {
		return registryclient.Credentials{}, &Error{fmt.Errorf("pull secret %s/%s: %w", sr.Namespace, sr.Name, err)}
	}
	if !found {
		return registryclient.Credentials{}, &Error{fmt.Errorf("pull secret %s/%s has no credentials for %s", sr.Namespace, sr.Name, ref.Registry)}
	}
	return creds, nil
}
