package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CheckAnnotation asks for an immediate check of the upstream tag whenever its
// value changes.
const CheckAnnotation = "tagger.dev/check"

// CacheFinalizer is set by the controller on Tags whose generations it
// copies into the bundled registry, so deleting the Tag first removes its
// cache tags (the registry's garbage collector then frees the blobs no
// other generation uses).
const CacheFinalizer = "tagger.dev/cache-cleanup"

// Condition types on a Tag.
const (
	// ConditionReady is True when the Tag serves a generation as its spec asks.
	ConditionReady = "Ready"
	// ConditionResolved is True when the last check of the upstream succeeded.
	ConditionResolved = "Resolved"
	// ConditionCached is True when the served generation is in the bundled registry.
	ConditionCached = "Cached"
	// ConditionConflict is True when an older Tag pins the same image; this one is not served.
	ConditionConflict = "Conflict"
)

// Check results recorded in status.lastCheck.result.
const (
	CheckUnchanged     = "Unchanged"
	CheckNewGeneration = "NewGeneration"
	CheckFailed        = "Failed"
)

// Defaults and limits of the Tag spec.
const (
	DefaultHistoryLimit = 25
	MaxHistoryLimit     = 100
)

// TagSpec is what the user asks for.
//
// +kubebuilder:validation:XValidation:rule="!has(self.checkInterval) || duration(self.checkInterval) >= duration('1m')",message="checkInterval must be at least 1m"
type TagSpec struct {
	// Image is the tag reference pods use, e.g. "nginx:1.27" or
	// "quay.io/org/app:v1", by the distribution reference grammar: an
	// optional registry host[:port] (a DNS name or an IP, recognized as a host
	// when the first component has a '.' or ':', is "localhost", or has
	// capitals), then a lowercase repository path, then an optional ":tag"
	// ("latest" when left out; [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}). A digest
	// ("@sha256:...") is refused: a Tag pins a tag to digests. The repository
	// path may have at most 255 characters (Docker Hub names count their
	// "library/" prefix). The controller records it normalized
	// ("docker.io/library/nginx:1.27") in status.image.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.contains('@')",message="image must be a tag reference, not a digest reference (no @sha256:...): a Tag pins a tag to digests"
	// +kubebuilder:validation:XValidation:rule="!self.endsWith(':') && !self.endsWith('/')",message="image must be a complete tag reference (nothing may end in ':' or '/')"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[a-f0-9]{64}$')",message="image must not be a 64-character hex string: that is an image ID, not a reference"
	// +kubebuilder:validation:XValidation:rule="self.matches('(^|/)[^/:@]*(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@.*)?$')",message="image's tag (after the last ':') must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-' (leave it out for latest)"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([^/]*[.:A-Z][^/]*|localhost)/') ? self.matches('^[^/]*/[^A-Z:@]*([:@].*)?$') : self.matches('^[^A-Z:@]*([:@].*)?$')",message="image's repository path must be lowercase (only the registry host and the tag may have capitals)"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([^/]*[.:A-Z][^/]*|localhost)/') ? self.matches('^[^/]*/[a-zA-Z0-9]+(([._]|__|-+)[a-zA-Z0-9]+)*(/[a-zA-Z0-9]+(([._]|__|-+)[a-zA-Z0-9]+)*)*([:@].*)?$') : self.matches('^[a-zA-Z0-9]+(([._]|__|-+)[a-zA-Z0-9]+)*(/[a-zA-Z0-9]+(([._]|__|-+)[a-zA-Z0-9]+)*)*([:@].*)?$')",message="image's repository path must be '/'-separated components of letters and digits, joined inside a component by one '.', one or two '_', or dashes (e.g. team/my-app)"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([^/]*[.:A-Z][^/]*|localhost)/') || self.matches('^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])([.]([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|[[][a-fA-F0-9:]+\\\\])(:[0-9]+)?/')",message="image's registry host (before the first '/') must be a DNS name, an IPv4 address or a bracketed IPv6 address, with an optional numeric port (e.g. registry.example:5000)"
	// +kubebuilder:validation:XValidation:rule="self.matches('^(docker[.]io|index[.]docker[.]io)/[^/]*$') ? self.matches('^[^/]*/[^:@]{0,247}([:@].*)?$') : self.matches('^([^/]*[.:A-Z][^/]*|localhost)/') ? self.matches('^[^/]*/[^:@]{0,255}([:@].*)?$') : self.contains('/') ? self.matches('^[^:@]{0,255}([:@].*)?$') : self.matches('^[^:@]{0,247}([:@].*)?$')",message="image's repository path must be at most 255 characters (a Docker Hub name counts its library/ prefix)"
	Image string `json:"image"`

	// Generation pins this generation of the history. Unset: serve the newest.
	// A generation that is not in the history leaves the previous one served and
	// says so in the Ready condition.
	// +optional
	// +kubebuilder:validation:Minimum=1
	Generation *int64 `json:"generation,omitempty"`

	// Cache copies every generation into the bundled registry. With a
	// pullSecretRef this makes a private image pullable by every node without
	// credentials. The controller then adds the tagger.dev/cache-cleanup
	// finalizer, so deleting the Tag removes its copies first.
	// +optional
	Cache bool `json:"cache,omitempty"`

	// PullSecretRef names a kubernetes.io/dockerconfigjson Secret with
	// credentials for the upstream registry. The controller reads only this
	// Secret, by name. By default it may read pull Secrets in one namespace
	// only, its own (the chart's pullSecrets.scope and pullSecrets.namespace):
	// a Secret elsewhere is not read, and the Tag is not Ready with reason
	// PullSecretNotAllowed, the message naming the allowed namespace.
	// +optional
	PullSecretRef *SecretReference `json:"pullSecretRef,omitempty"`

	// CheckInterval re-checks the upstream tag on this schedule (jittered).
	// Unset: only on create, on spec change, on webhooks and on the
	// tagger.dev/check annotation. Minimum 1m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	CheckInterval *metav1.Duration `json:"checkInterval,omitempty"`

	// HistoryLimit is how many generations are kept (1..100, default 25). The
	// served generation is never pruned.
	// +optional
	// +kubebuilder:default=25
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	HistoryLimit int32 `json:"historyLimit,omitempty"`

	// Rollout restarts workloads using this image when the served generation changes.
	// +optional
	Rollout *RolloutSpec `json:"rollout,omitempty"`
}

// SecretReference names a Secret in a namespace.
type SecretReference struct {
	// +kubebuilder:validation:MinLength=1
	Namespace string `json:"namespace"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// RolloutSpec controls workload restarts on a served-generation change.
type RolloutSpec struct {
	// Restart restarts matching Deployments, StatefulSets and DaemonSets the way
	// `kubectl rollout restart` does (a pod-template annotation; pods are never
	// mutated).
	// +optional
	Restart bool `json:"restart,omitempty"`
	// NamespaceSelector limits restarts to namespaces with matching labels
	// (unset: all namespaces).
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Selector limits restarts to workloads with matching labels (unset: all).
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// Generation is one digest the upstream tag has pointed at.
type Generation struct {
	// Generation is the sequence number, starting at 1 and only growing.
	Generation int64 `json:"generation"`
	// Image is the normalized tag reference this generation was resolved from.
	Image string `json:"image"`
	// Digest is the manifest or index digest the tag resolved to.
	Digest string `json:"digest"`
	// MediaType is the media type of that manifest or index.
	MediaType string `json:"mediaType,omitempty"`
	// Size is the size of that manifest or index in bytes.
	Size int64 `json:"size,omitempty"`
	// Platforms lists os/arch[/variant] of the image.
	// +optional
	Platforms []string `json:"platforms,omitempty"`
	// FirstSeen is when the controller first saw the tag at this digest.
	FirstSeen metav1.Time `json:"firstSeen"`
	// Cached is true once the whole image tree is in the bundled registry.
	// +optional
	Cached bool `json:"cached,omitempty"`
}

// CheckStatus is the outcome of the last upstream check.
type CheckStatus struct {
	Time metav1.Time `json:"time"`
	// +kubebuilder:validation:Enum=Unchanged;NewGeneration;Failed
	Result string `json:"result"`
	// +optional
	Message string `json:"message,omitempty"`
	// ConsecutiveFailures counts failed checks since the last success; it drives backoff.
	// +optional
	ConsecutiveFailures int32 `json:"consecutiveFailures,omitempty"`
	// RetryAfter is the wait the upstream asked for (429/503 Retry-After)
	// with the last failure; the next check waits at least this long.
	// +optional
	RetryAfter *metav1.Duration `json:"retryAfter,omitempty"`
}

// CacheStatus is the caching controller's record of its copies into the
// bundled registry and of the cache cleanup of a deleted Tag. It lives in
// status, not in memory, so a new leader resumes the backoff, the failure
// count and the give-up clock where the last one stopped.
type CacheStatus struct {
	// Generation is the generation the current or last copy is of (0: none).
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// CopyStarted is when the first attempt to copy Generation started.
	// +optional
	CopyStarted *metav1.Time `json:"copyStarted,omitempty"`
	// BlobsDone of Blobs, and BytesDone of Bytes, were in the bundled
	// registry when the last attempt ended.
	// +optional
	Blobs int32 `json:"blobs,omitempty"`
	// +optional
	BlobsDone int32 `json:"blobsDone,omitempty"`
	// +optional
	Bytes int64 `json:"bytes,omitempty"`
	// +optional
	BytesDone int64 `json:"bytesDone,omitempty"`
	// ConsecutiveFailures counts failed copies since the last success; it
	// drives the backoff.
	// +optional
	ConsecutiveFailures int32 `json:"consecutiveFailures,omitempty"`
	// NextRetry is when a failed copy is tried again.
	// +optional
	NextRetry *metav1.Time `json:"nextRetry,omitempty"`
	// CleanupStarted is when the first failed cache cleanup of the deleted
	// Tag happened; the finalizer is released anyway a while after it.
	// +optional
	CleanupStarted *metav1.Time `json:"cleanupStarted,omitempty"`
}

// TagStatus is what the controller observed.
type TagStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Image is spec.image normalized.
	// +optional
	Image string `json:"image,omitempty"`
	// ServedGeneration is the generation nodes are told to use (0: none yet).
	// +optional
	ServedGeneration int64 `json:"servedGeneration,omitempty"`
	// ServedDigest is the digest of the served generation.
	// +optional
	ServedDigest string `json:"servedDigest,omitempty"`
	// ServedShortDigest is ServedDigest shortened for the printer column.
	// +optional
	ServedShortDigest string `json:"servedShortDigest,omitempty"`
	// LatestGeneration is the newest generation recorded.
	// +optional
	LatestGeneration int64 `json:"latestGeneration,omitempty"`
	// CachedServed mirrors the Cached condition for the printer column.
	// +optional
	CachedServed bool `json:"cachedServed,omitempty"`
	// Generations is the history, newest first.
	// +optional
	Generations []Generation `json:"generations,omitempty"`
	// +optional
	LastCheck *CheckStatus `json:"lastCheck,omitempty"`
	// Cache is the caching controller's progress, failures and backoff.
	// +optional
	Cache *CacheStatus `json:"cache,omitempty"`
	// RolledOutGeneration is the served generation workloads were last
	// restarted for (spec.rollout.restart); a served generation that differs
	// starts a restart wave. Written only by the restart controller.
	// +optional
	RolledOutGeneration int64 `json:"rolledOutGeneration,omitempty"`
	// CheckAnnotation is the last value of the tagger.dev/check annotation acted on.
	// +optional
	CheckAnnotation string `json:"checkAnnotation,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// The printer columns: Ready is the Ready condition, False for a Tag in
// Conflict, one whose last check failed, or one that serves nothing or not
// the generation its spec asks; `kubectl get tags -o wide` adds when the
// upstream was last checked, with what result, and the Ready reason. The
// category "tagger" makes `kubectl get tagger` list them; not "all": Tags
// are cluster-scoped, so `kubectl get all -n NS` would list every Tag
// whatever the namespace.

// Tag pins a mutable image tag to digests, one generation per upstream move.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=tg,categories=tagger
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.image`
// +kubebuilder:printcolumn:name="Served",type=integer,JSONPath=`.status.servedGeneration`
// +kubebuilder:printcolumn:name="Digest",type=string,JSONPath=`.status.servedShortDigest`
// +kubebuilder:printcolumn:name="Latest",type=integer,JSONPath=`.status.latestGeneration`
// +kubebuilder:printcolumn:name="Cached",type=boolean,JSONPath=`.status.cachedServed`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Last Check",type=date,priority=1,JSONPath=`.status.lastCheck.time`
// +kubebuilder:printcolumn:name="Result",type=string,priority=1,JSONPath=`.status.lastCheck.result`
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
type Tag struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TagSpec `json:"spec"`
	// +optional
	Status TagStatus `json:"status,omitempty"`
}

// TagList is a list of Tags.
//
// +kubebuilder:object:root=true
type TagList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Tag `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Tag{}, &TagList{})
}
