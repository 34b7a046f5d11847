package controller

import (
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tagger-project/tagger/pkg/version"
)

// tagger_build_info joins the controller's metrics on controller-runtime's
// registry, which the manager serves on --metrics-addr.
func init() { metrics.Registry.MustRegister(version.NewCollector()) }
