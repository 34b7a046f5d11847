// Package v1alpha1 holds the tagger.dev/v1alpha1 API: the cluster-scoped Tag.
//
// +kubebuilder:object:generate=true
// +groupName=tagger.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of the Tag type.
	GroupVersion = schema.GroupVersion{Group: "tagger.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the API types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
