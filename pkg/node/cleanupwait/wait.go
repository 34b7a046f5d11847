// Package cleanupwait is the waiter of the chart's post-delete hook: `helm
// uninstall` creates a DaemonSet whose pod on every node runs `node-agent
// cleanup --hold` (restore the node's hosts.toml files, then report Ready and
// hold), and a Job running `node-agent cleanup-wait`, which returns when every
// node's cleanup pod is Ready, or fails after a timeout naming the nodes that
// did not finish. Helm waits for the Job, so the uninstall reports the
// outcome, and deletes the hook DaemonSet once the Job succeeded.
//
// It reads only DaemonSets and Pods in its own namespace (the hook's Role).
package cleanupwait

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Options configure Wait.
type Options struct {
	// Namespace holds the cleanup DaemonSet (the release namespace).
	Namespace string
	// DaemonSet is the cleanup DaemonSet's name.
	DaemonSet string
	// AgentSelector selects the node agent's pods (label selector): cleanup
	// is only done once none of them is left, so that no stopping agent can
	// write hosts.toml after its node was restored. "" skips the check.
	AgentSelector string
	// Timeout bounds the whole wait.
	Timeout time.Duration
	// Interval is the polling period (default 2s).
	Interval time.Duration
	// Settle is how long everything must stay done before Wait returns: the
	// cleanup pods repeat their restore on this period, so one more round
	// runs after the last agent pod went away (default 0).
	Settle time.Duration
	// Log receives progress; nil logs nothing.
	Log logrus.FieldLogger
}

// Progress is the state of one poll.
type Progress struct {
	// Done: the DaemonSet's controller saw its current generation, every
	// node that should run a cleanup pod runs one of that generation and
	// every such pod is Ready, and no agent pod is left.
	Done bool
	// Desired and Ready are the DaemonSet's counts.
	Desired, Ready int32
	// Pending names the nodes whose cleanup pod is not Ready (sorted).
	Pending []string
	// Missing counts nodes the DaemonSet wants a pod on that have none.
	Missing int32
	// Agents names the nodes where an agent pod is still present (sorted).
	Agents []string
	// Reason says what is still missing when nothing else does (e.g. the
	// controller has not seen the DaemonSet yet).
	Reason string
}

func (p Progress) String() string {
	var parts []string
	parts = append(parts, fmt.Sprintf("%d/%d nodes cleaned", p.Ready, p.Desired))
	if len(p.Pending) > 0 {
		parts = append(parts, "not done on nodes "+strings.Join(p.Pending, ", "))
	}
	if p.Missing > 0 {
		parts = append(parts, fmt.Sprintf("%d nodes have no cleanup pod yet", p.Missing))
	}
	if len(p.Agents) > 0 {
		parts = append(parts, "node agent pods still running on nodes "+strings.Join(p.Agents, ", "))
	}
	if p.Reason != "" {
		parts = append(parts, p.Reason)
	}
	return strings.Join(parts, "; ")
}

// Check polls once.
func Check(ctx context.Context, cs kubernetes.Interface, o Options) (Progress, error) {
	ds, err := cs.AppsV1().DaemonSets(o.Namespace).Get(ctx, o.DaemonSet, metav1.GetOptions{})
	if err != nil {
		return Progress{}, fmt.Errorf("get DaemonSet %s/%s: %w", o.Namespace, o.DaemonSet, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return Progress{}, fmt.Errorf("DaemonSet %s/%s selector: %w", o.Namespace, o.DaemonSet, err)
	}
	pods, err := cs.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return Progress{}, fmt.Errorf("list pods of DaemonSet %s/%s: %w", o.Namespace, o.DaemonSet, err)
	}
	p := progress(ds, pods.Items)
	if o.AgentSelector != "" {
		agents, err := cs.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: o.AgentSelector})
		if err != nil {
			return Progress{}, fmt.Errorf("list node agent pods (%s) in %s: %w", o.AgentSelector, o.Namespace, err)
		}
		for _, a := range agents.Items {
			p.Agents = append(p.Agents, nodeOf(&a))
		}
		slices.Sort(p.Agents)
		p.Done = p.Done && len(p.Agents) == 0
	}
	return p, nil
}

// templateGenerationLabel is the label the DaemonSet controller puts on
// every pod it creates: the DaemonSet generation the pod's template is from.
const templateGenerationLabel = "pod-template-generation"

// progress judges the DaemonSet's status and its pods. The DaemonSet's
// counts alone could be stale (a status from before the controller saw the
// current generation) or count pods of an older template, so the pods are
// checked one by one as well.
func progress(ds *appsv1.DaemonSet, pods []corev1.Pod) Progress {
	st := ds.Status
	p := Progress{Desired: st.DesiredNumberScheduled, Ready: st.NumberReady}
	gen := strconv.FormatInt(ds.Generation, 10)
	ready := 0
	for i := range pods {
		pod := &pods[i]
		if pod.DeletionTimestamp != nil {
			continue
		}
		if pod.Labels[templateGenerationLabel] != gen || !podReady(pod) {
			p.Pending = append(p.Pending, nodeOf(pod))
			continue
		}
		ready++
	}
	slices.Sort(p.Pending)
	if missing := st.DesiredNumberScheduled - int32(ready) - int32(len(p.Pending)); missing > 0 {
		p.Missing = missing
	}
	switch {
	case st.ObservedGeneration < ds.Generation:
		p.Reason = fmt.Sprintf("the DaemonSet controller has not seen generation %d yet", ds.Generation)
	case st.UpdatedNumberScheduled != st.DesiredNumberScheduled:
		p.Reason = fmt.Sprintf("%d of %d nodes run the current cleanup pod", st.UpdatedNumberScheduled, st.DesiredNumberScheduled)
	}
	p.Done = p.Reason == "" && len(p.Pending) == 0 && p.Missing == 0 &&
		st.NumberReady == st.DesiredNumberScheduled && int32(ready) == st.DesiredNumberScheduled
	return p
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func nodeOf(pod *corev1.Pod) string {
	if pod.Spec.NodeName != "" {
		return pod.Spec.NodeName
	}
	return "(unscheduled pod " + pod.Name + ")"
}

// ErrTimeout is wrapped by the error Wait returns when the timeout passes.
var ErrTimeout = errors.New("node cleanup did not finish in time")

// Wait polls until Check reports done for Settle, the timeout passes (an
// error wrapping ErrTimeout that names the nodes not done) or ctx ends.
func Wait(ctx context.Context, cs kubernetes.Interface, o Options) error {
	if o.Interval <= 0 {
		o.Interval = 2 * time.Second
	}
	if o.Timeout <= 0 {
		return fmt.Errorf("timeout %s: must be positive", o.Timeout)
	}
	log := o.Log
	if log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		log = l
	}
	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()

	var (
		last      Progress
		lastErr   error
		doneSince time.Time
		said      string
	)
	for {
		p, err := Check(ctx, cs, o)
		last, lastErr = p, err
		switch {
		case err != nil:
			doneSince = time.Time{}
			log.WithError(err).Warn("check node cleanup")
		case p.Done:
			if doneSince.IsZero() {
				doneSince = time.Now()
			}
			if time.Since(doneSince) >= o.Settle {
				log.WithField("nodes", p.Desired).Info("every node restored its containerd registry configuration")
				return nil
			}
		default:
			doneSince = time.Time{}
		}
		if s := p.String(); err == nil && s != said {
			log.Info(s)
			said = s
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for node cleanup (DaemonSet %s/%s): %w", o.Namespace, o.DaemonSet, ctx.Err())
		case <-deadline.C:
			if lastErr != nil {
				return fmt.Errorf("%w after %s: DaemonSet %s/%s: %w", ErrTimeout, o.Timeout, o.Namespace, o.DaemonSet, lastErr)
			}
			return fmt.Errorf("%w after %s (DaemonSet %s/%s): %s", ErrTimeout, o.Timeout, o.Namespace, o.DaemonSet, last)
		case <-tick.C:
		}
	}
}
