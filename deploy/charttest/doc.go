// Package charttest tests the Helm chart in deploy/chart/tagger and the plain
// manifests rendered from it (deploy/manifests). It has no non-test code: the
// tests render the chart with a real helm binary, decode every object with
// client-go's scheme and check what the chart promises, RBAC above all.
package charttest
