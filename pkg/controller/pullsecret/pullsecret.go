// Package pullsecret reads the upstream credentials a Tag names in
// spec.pullSecretRef, for the checks and for the cache copies.
package pullsecret

import (
	"context"
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

// Credentials reads the dockerconfigjson Secret the Tag names, if any, and
// returns its credentials for ref's registry. reader should be uncached, so
// the controller never lists or watches Secrets.
func Credentials(ctx context.Context, reader client.Reader, tag *v1alpha1.Tag, ref pins.Reference) (registryclient.Credentials, error) {
	sr := tag.Spec.PullSecretRef
	if sr == nil {
		return registryclient.Credentials{}, nil
	}
	var sec corev1.Secret
	if err := reader.Get(ctx, client.ObjectKey{Namespace: sr.Namespace, Name: sr.Name}, &sec); err != nil {
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
