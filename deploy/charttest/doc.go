// Package charttest tests the Helm chart in deploy/chart/tagger and the plain
// manifests rendered from it (deploy/manifests), and the image the chart
// runs. It has no non-test code: the tests render the chart with a real helm
// binary, decode every object with client-go's scheme and check what the
// chart promises, RBAC above all; and they build the repository's Dockerfile
// with BuildKit (internal/rig/imagebuild) and check the image the chart's
// containers need.
package charttest
