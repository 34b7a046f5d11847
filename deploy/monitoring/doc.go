// Package monitoring tests what tagger ships for Prometheus and Grafana: the
// alerting rules and the dashboard (deploy/chart/tagger/files, one source
// for the chart's PrometheusRule and dashboard ConfigMap and for plain
// Prometheus), the chart's monitoring templates, and that every metric the
// rules and the dashboard name is one the controller or the node agent
// really exports. It holds no product code.
package monitoring
