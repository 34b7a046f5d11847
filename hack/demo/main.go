// Command demo runs tagger's main job locally on real components: a real
// kube-apiserver and etcd (envtest), a real distribution registry playing the
// upstream, a second one as the bundled registry, and the controller
// in-process. It pins a tag, moves the tag upstream twice, and rolls back,
// printing what `kubectl get tags` would show. As root it then adds a node: a
// real containerd whose hosts.toml the node agent writes, which pulls the
// pinned (rolled-back) digest by the ordinary tag, and still pulls it from the
// bundled registry once the upstream is stopped.
//
//	make demo   (builds the rig binaries first)
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/logging"
	"github.com/tagger-project/tagger/pkg/pins"
)

func main() {
	p := &rig.Program{Prefix: "tagger-demo"}
	code := 0
	if err := p.Run(func() error { return run(p) }); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		code = 1
	}
	p.Close()
	os.Exit(code)
}

func run(d *rig.Program) error {
	bin := rig.BinDir()
	for _, b := range []string{"kube-apiserver", "etcd", "registry"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("rig binary %s missing in %s: run `make testbin`", b, bin)
		}
	}
	ctx := context.Background()

	step("Starting a real kube-apiserver + etcd with the Tag CRD from deploy/crds")
	kc, err := rig.StartKube(bin)
	if err != nil {
		return err
	}
	// The in-process controller and agent log as the binaries do.
	logging.SetKubeLoggers(kc.Log)
	d.Cleanup(func() { _ = kc.Stop() })
	c := kc.Client

	step("Starting a real distribution registry as the upstream")
	up := rig.StartRegistry(d, filepath.Join(bin, "registry"), rig.RegistryOptions{})
	img1 := up.PushImage(d, "demo/app", "v1", rig.ImageOptions{Layers: 2})
	fmt.Printf("  pushed %s/demo/app:v1 -> %s\n", up.Host(), img1.Digest)
	bundled := rig.StartRegistry(d, filepath.Join(bin, "registry"), rig.RegistryOptions{})
	fmt.Printf("  and another one as the bundled registry: %s\n", bundled.URL())

	step("Starting the tagger controller")
	o := inproc.ControllerOptions()
	o.PlainHTTPRegistries = []string{up.Host()}
	o.RegistryURL = bundled.URL()
	inproc.RunController(kc, o)

	step("kubectl apply: Tag app -> " + up.Host() + "/demo/app:v1")
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: v1alpha1.TagSpec{Image: up.Host() + "/demo/app:v1"}}
	if err := c.Create(ctx, tag); err != nil {
		return fmt.Errorf("create Tag: %w", err)
	}
	if err := wait(ctx, c, func(t *v1alpha1.Tag) bool { return t.Status.ServedDigest == img1.Digest.String() }); err != nil {
		return err
	}
	show(ctx, c)

	latest := img1.Digest.String()
	for i, v := range []string{"second", "third"} {
		img := up.PushImage(d, "demo/app", "v1", rig.ImageOptions{Layers: 2})
		latest = img.Digest.String()
		step(fmt.Sprintf("The upstream moves demo/app:v1 (%s push) -> %s; a check records generation %d", v, img.Digest, i+2))
		if err := patch(ctx, c, fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1alpha1.CheckAnnotation, v)); err != nil {
			return err
		}
		if err := wait(ctx, c, func(t *v1alpha1.Tag) bool { return t.Status.ServedDigest == img.Digest.String() }); err != nil {
			return err
		}
		show(ctx, c)
	}

	step("Rollback is one field: spec.generation: 1")
	if err := patch(ctx, c, `{"spec":{"generation":1}}`); err != nil {
		return err
	}
	if err := wait(ctx, c, func(t *v1alpha1.Tag) bool { return t.Status.ServedGeneration == 1 }); err != nil {
		return err
	}
	show(ctx, c)

	step("A generation that does not exist leaves generation 1 served and says why")
	if err := patch(ctx, c, `{"spec":{"generation":9}}`); err != nil {
		return err
	}
	if err := wait(ctx, c, func(t *v1alpha1.Tag) bool {
		r := meta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady)
		return r != nil && r.Reason == "GenerationNotFound"
	}); err != nil {
		return err
	}
	show(ctx, c)

	nodeRan, err := node(ctx, d, kc, bundled, up, img1.Digest.String(), latest)
	if err != nil {
		return err
	}

	step("Events on the Tag")
	var evs eventsv1.EventList
	if err := c.List(ctx, &evs); err == nil {
		for _, e := range evs.Items {
			if e.Regarding.Name == "app" {
				fmt.Printf("  %-24s %s\n", e.Reason, e.Note)
			}
		}
	}
	if nodeRan {
		fmt.Println("\ndemo complete: 3 generations recorded, rollback served generation 1, and the node pulled it by tag, also with the upstream down.")
	} else {
		fmt.Println("\ndemo complete: 3 generations recorded, rollback served generation 1 (run as root for the node steps).")
	}
	return nil
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

func patch(ctx context.Context, c client.Client, body string) error {
	t := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "app"}}
	if err := c.Patch(ctx, t, client.RawPatch("application/merge-patch+json", []byte(body))); err != nil {
		return fmt.Errorf("patch Tag app with %s: %w", body, err)
	}
	return nil
}

func wait(ctx context.Context, c client.Client, cond func(*v1alpha1.Tag) bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var t v1alpha1.Tag
		if err := c.Get(ctx, client.ObjectKey{Name: "app"}, &t); err == nil && t.Status.ObservedGeneration == t.Generation && cond(&t) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("Tag app did not reach the expected state within 30s")
}

func show(ctx context.Context, c client.Client) {
	var t v1alpha1.Tag
	if err := c.Get(ctx, client.ObjectKey{Name: "app"}, &t); err != nil {
		fmt.Println("  get Tag:", err)
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "  NAME\tIMAGE\tSERVED\tDIGEST\tLATEST\tCACHED")
	fmt.Fprintf(w, "  %s\t%s\t%d\t%s\t%d\t%v\n", t.Name, t.Spec.Image, t.Status.ServedGeneration, t.Status.ServedShortDigest, t.Status.LatestGeneration, t.Status.CachedServed)
	w.Flush()
	fmt.Println("  history:")
	for _, g := range t.Status.Generations {
		mark := " "
		if g.Generation == t.Status.ServedGeneration {
			mark = "*"
		}
		fmt.Printf("   %s gen %d  %s  %s\n", mark, g.Generation, g.Digest, strings.Join(g.Platforms, ","))
	}
	if r := meta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady); r != nil {
		fmt.Printf("  Ready=%s (%s): %s\n", r.Status, r.Reason, r.Message)
	}
}

// node runs the node steps as root (rig.NewContainerd stops the demo with
// a `make testbin` hint when the containerd binaries are missing):
// a real containerd whose hosts.toml the node agent writes pulls the served
// digest by tag, then, with spec.cache on, again with the upstream stopped.
func node(ctx context.Context, d *rig.Program, kc *rig.Kube, bundled, up *rig.Registry, served, upstream string) (bool, error) {
	if os.Geteuid() != 0 {
		step("Skipping the node steps: a real containerd needs root")
		return false, nil
	}
	image := up.Host() + "/demo/app:v1"

	step("A node: a real containerd, and the tagger node agent writing its hosts.toml")
	ctd := rig.NewContainerd(d, rig.ContainerdOptions{})
	agent := inproc.RunNodeAgent(d, kc, ctd, bundled.URL())
	ref, err := pins.ParseReference(image)
	if err != nil {
		return false, err
	}
	hostsToml := filepath.Join(ctd.HostsDir(), ref.Registry, "hosts.toml")
	rig.WaitFor(d, 30*time.Second, "the node agent to pin "+image, func() (bool, string) {
		p, ok := agent.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
		b, _ := os.ReadFile(hostsToml)
		written := strings.HasPrefix(string(b), "# managed by tagger")
		return ok && p.Digest == served && len(agent.NotReady()) == 0 && written,
			fmt.Sprintf("pin %+v, not ready %v, hosts.toml written %v", p, agent.NotReady(), written)
	})
	b, err := os.ReadFile(hostsToml)
	if err != nil {
		return false, err
	}
	fmt.Printf("  %s:\n", hostsToml)
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		fmt.Println("    " + l)
	}

	step("CRI pull of " + image + " (what the kubelet does): the upstream's v1 is " + short(upstream) + ", the node gets the served " + short(served))
	if err := pull(ctx, ctd, image, served); err != nil {
		return false, err
	}

	step("spec.cache: true (and back to spec.generation: 1): the controller copies the whole image into the bundled registry")
	if err := patch(ctx, kc.Client, `{"spec":{"generation":1,"cache":true}}`); err != nil {
		return false, err
	}
	if err := wait(ctx, kc.Client, func(t *v1alpha1.Tag) bool { return t.Status.CachedServed }); err != nil {
		return false, err
	}
	show(ctx, kc.Client)
	rig.WaitFor(d, 30*time.Second, "the node agent to see the served generation cached", func() (bool, string) {
		p, ok := agent.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
		return ok && p.Cached, fmt.Sprintf("pin %+v", p)
	})

	step("The upstream goes down (process stopped, port closed); a node with an empty content store still pulls " + short(served))
	up.Stop()
	if err := pull(ctx, ctd, image, served); err != nil {
		return false, err
	}
	return true, nil
}

// pull pulls ref through containerd's CRI image service into an empty image
// store and checks the digest it recorded.
func pull(ctx context.Context, ctd *rig.Containerd, ref, want string) error {
	if err := ctd.RemoveAllImages(ctx); err != nil {
		return fmt.Errorf("clear the node's images: %w", err)
	}
	start := time.Now()
	if _, err := ctd.Pull(ctx, ref); err != nil {
		return fmt.Errorf("CRI pull %s: %w", ref, err)
	}
	got, ok, err := ctd.ImageDigest(ctx, ref)
	if err != nil || !ok {
		return fmt.Errorf("containerd has no record of %s after the pull: %v", ref, err)
	}
	fmt.Printf("  pulled %s in %v: %s\n", ref, time.Since(start).Round(time.Millisecond), got)
	if got != want {
		return fmt.Errorf("the node pulled %s, want the served %s", got, want)
	}
	return nil
}

func short(digest string) string {
	if len(digest) > len("sha256:")+12 {
		return digest[:len("sha256:")+12]
	}
	return digest
}
