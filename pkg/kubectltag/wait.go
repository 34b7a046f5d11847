package kubectltag

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// pollInterval is how often a wait re-reads the Tag. A Get is cheap and the
// controller usually answers within a second, so polling beats a watch's setup.
const pollInterval = 200 * time.Millisecond

// defaultTimeout bounds every wait for the controller.
const defaultTimeout = 60 * time.Second

func bindTimeout(cmd *cobra.Command, timeout *time.Duration, what string) {
	cmd.Flags().DurationVar(timeout, "timeout", defaultTimeout, "How long to wait for the controller to "+what)
}

func checkTimeout(cmd *cobra.Command, timeout time.Duration) error {
	if timeout <= 0 {
		return usageErrorf(cmd, "invalid --timeout %v: must be positive", timeout)
	}
	return nil
}

// waitFor re-reads Tag name until done holds, and fails after timeout with
// done's description of what it last saw. A missing Tag ends the wait at once.
func waitFor(ctx context.Context, c client.Client, name string, timeout time.Duration, what string,
	done func(*v1alpha1.Tag) (bool, string)) (*v1alpha1.Tag, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last string
	for {
		tag, err := getTag(wctx, c, name)
		switch {
		case err == nil:
			ok, state := done(tag)
			if ok {
				return tag, nil
			}
			last = state
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case wctx.Err() == nil:
			var nf *notFoundError
			if errors.As(err, &nf) {
				return nil, err
			}
			last = err.Error() // a transient apiserver error: keep trying until the deadline
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wctx.Done():
			return nil, fmt.Errorf("timed out after %v waiting for %s (%s); is the tagger controller running?", timeout, what, last)
		case <-tick.C:
		}
	}
}

func condition(tag *v1alpha1.Tag, typ string) *metav1.Condition {
	return meta.FindStatusCondition(tag.Status.Conditions, typ)
}

// conflictError is set when another, older Tag pins the same image, so the
// controller neither checks nor serves this one.
func conflictError(tag *v1alpha1.Tag) error {
	if c := condition(tag, v1alpha1.ConditionConflict); c != nil && c.Status == metav1.ConditionTrue {
		return fmt.Errorf("Tag %q is not served: %s", tag.Name, c.Message)
	}
	return nil
}

// serving describes the served generation of a Tag.
func serving(tag *v1alpha1.Tag) string {
	st := tag.Status
	if st.ServedGeneration == 0 {
		return "serving no generation yet"
	}
	return fmt.Sprintf("serving generation %d (%s)", st.ServedGeneration, st.ServedDigest)
}
