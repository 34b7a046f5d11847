package monitoring

import (
	"slices"
	"testing"
)

func TestMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`tagger_hosts_config_ok == 0`, []string{"tagger_hosts_config_ok"}},
		{`up{job="tagger-node-agent"} == 0`, []string{"up"}},
		{`absent(up{job="tagger-controller"} == 1)`, []string{"up"}},
		{`sum by (job, registry) (rate(tagger_checks_total{result="Failed"}[15m])) / sum by (registry) (rate(tagger_checks_total[15m])) > 0.5`,
			[]string{"tagger_checks_total"}},
		{`(time() - tagger_tag_last_successful_check_timestamp_seconds) > 3600
and on (tag) tagger_tag_condition{condition="Resolved"} == 0`,
			[]string{"tagger_tag_last_successful_check_timestamp_seconds", "tagger_tag_condition"}},
		{`histogram_quantile(0.95, sum by (kind, le) (rate(tagger_mirror_request_duration_seconds_bucket[$__rate_interval])))`,
			[]string{"tagger_mirror_request_duration_seconds_bucket"}},
		{`count(x == 1) or vector(0) + 1e3 * y offset 5m unless z{a="b{c}"}`, []string{"x", "y", "z"}},
		{`{__name__="quoted"} + sum without (instance) (a:recorded:rule)`, []string{"a:recorded:rule"}},
	} {
		if got := MetricNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("MetricNames(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
}
