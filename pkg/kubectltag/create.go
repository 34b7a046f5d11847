package kubectltag

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/pins"
)

// minCheckInterval mirrors the CRD's CEL rule on spec.checkInterval.
const minCheckInterval = time.Minute

type createFlags struct {
	image        string
	cache        bool
	interval     time.Duration
	historyLimit int32
}

func (a *app) createCommand() *cobra.Command {
	var f createFlags
	out := newOutput("created")
	cmd := &cobra.Command{
		Use:   "create NAME --image REF",
		Short: "Create a Tag that pins an image tag",
		Long: longDesc(`
			Create a Tag. The controller resolves the image tag and records generation 1;
			afterwards it records a new generation each time the tag moves upstream.`),
		Example: examples(`
			# Pin nginx:1.27; check upstream only when asked (kubectl tag check)
			kubectl tag create nginx --image nginx:1.27

			# Cache every generation, re-check hourly, keep 10 generations
			kubectl tag create app --image quay.io/org/app:v1 --cache --interval 1h --history-limit 10

			# Print the created Tag
			kubectl tag create web --image nginx:1.27 -o yaml`),
		Args: func(cmd *cobra.Command, args []string) error {
			if err := nameArg(cmd, args); err != nil {
				return err
			}
			return out.check(cmd)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			tag, err := f.tag(cmd, args[0])
			if err != nil {
				return err
			}
			c, err := a.tags()
			if err != nil {
				return err
			}
			if err := c.Create(cmd.Context(), tag); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("Tag %q already exists", tag.Name)
				}
				return apiError("create", tag.Name, err)
			}
			return a.printResult(out, tag)
		},
	}
	out.bind(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.image, "image", "", "Image tag reference to pin, e.g. nginx:1.27 or quay.io/org/app:v1 (required)")
	fl.BoolVar(&f.cache, "cache", false, "Copy every generation into the bundled registry")
	fl.DurationVar(&f.interval, "interval", 0, "Re-check the upstream on this schedule (at least 1m; default: only on demand)")
	fl.Int32Var(&f.historyLimit, "history-limit", 0, fmt.Sprintf("Generations kept, 1..%d (default %d)", v1alpha1.MaxHistoryLimit, v1alpha1.DefaultHistoryLimit))
	return cmd
}

// tag validates the flags locally, so a mistake gets a clear message before
// the apiserver's schema validation sees it.
func (f *createFlags) tag(cmd *cobra.Command, name string) (*v1alpha1.Tag, error) {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, usageErrorf(cmd, "invalid Tag name %q: %s", name, errs[0])
	}
	if f.image == "" {
		return nil, usageErrorf(cmd, "--image is required: the image tag to pin, e.g. --image nginx:1.27")
	}
	if _, err := pins.ParseReference(f.image); err != nil {
		return nil, usageErrorf(cmd, "invalid --image: %v", err)
	}
	tag := &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.TagSpec{Image: f.image, Cache: f.cache},
	}
	if cmd.Flags().Changed("interval") {
		if f.interval < minCheckInterval {
			return nil, usageErrorf(cmd, "invalid --interval %v: must be at least %v", f.interval, minCheckInterval)
		}
		tag.Spec.CheckInterval = &metav1.Duration{Duration: f.interval}
	}
	if cmd.Flags().Changed("history-limit") {
		if f.historyLimit < 1 || f.historyLimit > v1alpha1.MaxHistoryLimit {
			return nil, usageErrorf(cmd, "invalid --history-limit %d: must be 1..%d", f.historyLimit, v1alpha1.MaxHistoryLimit)
		}
		tag.Spec.HistoryLimit = f.historyLimit
	}
	return tag, nil
}
