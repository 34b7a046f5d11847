package node

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/node/readyfile"
)

// HoldOptions configure CleanupHold.
type HoldOptions struct {
	// ReadyFile is written once the node is restored; the hook pod's exec
	// readiness probe (`node-agent ready-check`) reads it.
	ReadyFile string
	// Interval is how often the restore repeats while held (default 5s): a
	// node agent pod that is still stopping when the hook pod starts could
	// write hosts.toml once more, and the next round undoes it.
	Interval time.Duration
}

// CleanupHold is what the chart's post-delete hook DaemonSet runs on every
// node: it restores the node's registry configuration (Cleanup), reports
// Ready through o.ReadyFile, and holds until ctx ends (SIGTERM, when helm
// deletes the hook), repeating the restore every interval. A failed restore
// is logged and retried; the pod stays not Ready, so the hook's waiter names
// this node when it times out.
func CleanupHold(ctx context.Context, o Options, h HoldOptions, log logrus.FieldLogger) error {
	if h.Interval <= 0 {
		h.Interval = 5 * time.Second
	}
	m, err := newHosts(o)
	if err != nil {
		return err
	}
	tick := time.NewTicker(h.Interval)
	defer tick.Stop()
	restored := false
	for {
		if err := m.Cleanup(); err != nil {
			log.WithError(err).WithField("hostsDir", o.HostsDir).Error("restore the node's hosts.toml files; retrying")
			if rerr := readyfile.Set(h.ReadyFile, []string{err.Error()}); rerr != nil {
				log.WithError(rerr).Warn("write ready file")
			}
		} else {
			if !restored {
				log.WithField("hostsDir", o.HostsDir).Info("restored the node's hosts.toml files; holding until the uninstall completes")
				restored = true
			}
			if err := readyfile.Set(h.ReadyFile, nil); err != nil {
				log.WithError(err).Error("write ready file")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
