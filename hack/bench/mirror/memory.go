package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/pins"
)

// memResult is what one `mem` process reports.
type memResult struct {
	Pins        int      `json:"pins"`
	Generations int      `json:"generations"`
	KeepTags    bool     `json:"keep_tags"`
	Trim        bool     `json:"trim"`
	Baseline    memUsage `json:"baseline"`
	After       memUsage `json:"after"`
	// RebuildPeakRSS is the highest RSS while the snapshot is rebuilt as the
	// node agent does (a deep-copied List, a new snapshot), keep-tags only.
	RebuildPeakRSS int64 `json:"rebuild_peak_rss,omitempty"`
}

type memUsage struct {
	RSS       int64 `json:"rss"`        // VmRSS
	HeapAlloc int64 `json:"heap_alloc"` // live heap after GC
	HeapInuse int64 `json:"heap_inuse"`
	GoSys     int64 `json:"go_sys"` // memory the Go runtime got from the OS
}

// memRunResults is one configuration's runs.
type memRunResults struct {
	Name string      `json:"name"`
	Runs []memResult `json:"runs"`
}

func measureMem() memUsage {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memUsage{RSS: procStatusKB("VmRSS") << 10, HeapAlloc: int64(ms.HeapAlloc), HeapInuse: int64(ms.HeapInuse), GoSys: int64(ms.Sys)}
}

// procStatusKB reads one "kB" field of /proc/self/status.
func procStatusKB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return -1
}

func memMain(args []string) int {
	fs := flag.NewFlagSet("mem", flag.ExitOnError)
	n := fs.Int("pins", 10000, "synthetic Tags, each pinning one image")
	gens := fs.Int("generations", 3, "generations in each Tag's status")
	keep := fs.Bool("keep-tags", false, "keep the Tag objects, as the node agent's informer cache does")
	trim := fs.Bool("trim", false, "keep only what the node agent's Tag cache transform keeps of each Tag (slim Tags)")
	_ = fs.Parse(args)
	if *n < 1 || *gens < 1 {
		fmt.Fprintln(os.Stderr, "mem: -pins and -generations must be >= 1")
		return 2
	}
	res := memResult{Pins: *n, Generations: *gens, KeepTags: *keep, Trim: *trim}
	res.Baseline = measureMem()

	table, tags, err := buildTable(*n, *gens, *trim, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mem:", err)
		return 1
	}
	res.After = measureMem()
	if *keep {
		// A rebuild: controller-runtime's cache List deep-copies every Tag,
		// then a new snapshot replaces the old one.
		_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM
		list := (&v1alpha1.TagList{Items: tags}).DeepCopy()
		table.Store(pins.BuildSnapshot(list.Items))
		runtime.KeepAlive(list)
		res.RebuildPeakRSS = procStatusKB("VmHWM") << 10
	}
	runtime.KeepAlive(table)
	runtime.KeepAlive(tags)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

// buildTable decodes n synthetic Tags and builds the pin table from them,
// as the node agent does; it returns the Tags only when keep is set. (In its
// own function so that nothing in the caller's frame holds the Tags.)
func buildTable(n, gens int, trim, keep bool) (*pins.Table, []v1alpha1.Tag, error) {
	// Each Tag goes through JSON, so it is laid out in memory as one decoded
	// from the API server is (one allocation per string, slice, raw field).
	tags := make([]v1alpha1.Tag, n)
	for i := range tags {
		t := synthTag(i, gens)
		b, err := json.Marshal(&t)
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(b, &tags[i]); err != nil {
			return nil, nil, err
		}
		if trim {
			trimTag(&tags[i])
		}
	}
	snap := pins.BuildSnapshot(tags)
	if snap.Len() != n {
		return nil, nil, fmt.Errorf("snapshot holds %d pins, want %d", snap.Len(), n)
	}
	table := pins.NewTable()
	table.Store(snap)
	if !keep {
		return table, nil, nil
	}
	return table, tags, nil
}

// trimTag is what the node agent's Tag informer keeps of a Tag (its cache
// transform, slimTag in pkg/node): type meta, name, uid,
// resourceVersion, creation and deletion time, spec.image,
// status.servedGeneration and servedDigest, and the served generation's
// entry without its platforms. No managedFields, annotations, conditions or
// other generations.
func trimTag(t *v1alpha1.Tag) {
	g, ok := pins.Find(t.Status.Generations, t.Status.ServedGeneration)
	*t = v1alpha1.Tag{
		TypeMeta: t.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: t.Name, CreationTimestamp: t.CreationTimestamp, DeletionTimestamp: t.DeletionTimestamp,
			ResourceVersion: t.ResourceVersion, UID: t.UID},
		Spec:   v1alpha1.TagSpec{Image: t.Spec.Image},
		Status: v1alpha1.TagStatus{ServedGeneration: t.Status.ServedGeneration, ServedDigest: t.Status.ServedDigest},
	}
	if ok {
		g.Platforms = nil
		t.Status.Generations = []v1alpha1.Generation{g}
	}
}

var synthRegistries = []string{"docker.io", "ghcr.io", "quay.io", "registry.example.com:5000"}

// synthTag is a Tag as the API server returns it after a few upstream
// moves: applied with kubectl, status written by the controller, gens
// generations, the newest served.
func synthTag(i, gens int) v1alpha1.Tag {
	reg := synthRegistries[i%len(synthRegistries)]
	image := fmt.Sprintf("%s/team%03d/app%05d:v1.%d", reg, i%100, i, i%10)
	name := fmt.Sprintf("app%05d", i)
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	ts := metav1.NewTime(created)
	digestOf := func(g int) string {
		s := sha256.Sum256(fmt.Appendf(nil, "%d/%d", i, g))
		return "sha256:" + hex.EncodeToString(s[:])
	}
	status := v1alpha1.TagStatus{
		ObservedGeneration: 1, Image: image, ServedGeneration: int64(gens), LatestGeneration: int64(gens),
		ServedDigest: digestOf(gens), ServedShortDigest: digestOf(gens)[7:19], CachedServed: true,
		LastCheck:       &v1alpha1.CheckStatus{Time: metav1.NewTime(created.Add(24 * time.Hour)), Result: v1alpha1.CheckUnchanged},
		CheckAnnotation: "",
	}
	for g := gens; g >= 1; g-- { // newest first
		status.Generations = append(status.Generations, v1alpha1.Generation{
			Generation: int64(g), Image: image, Digest: digestOf(g), MediaType: ocispec.MediaTypeImageIndex,
			Size: int64(1500 + i%700), Platforms: []string{"linux/amd64", "linux/arm64"},
			FirstSeen: metav1.NewTime(created.Add(time.Duration(g) * time.Hour)), Cached: true,
		})
	}
	for _, ct := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionResolved, v1alpha1.ConditionCached} {
		status.Conditions = append(status.Conditions, metav1.Condition{
			Type: ct, Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: ts,
			Reason: "Serving", Message: fmt.Sprintf("generation %d (%s) is served", gens, digestOf(gens)[:19]),
		})
	}
	applied := fmt.Sprintf(`{"apiVersion":"tagger.dev/v1alpha1","kind":"Tag","metadata":{"annotations":{},"name":%q},"spec":{"image":%q}}`+"\n", name, image)
	return v1alpha1.Tag{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Tag"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, UID: synthUID(i), ResourceVersion: strconv.Itoa(100000 + i*7), Generation: 1,
			CreationTimestamp: ts,
			Annotations:       map[string]string{"kubectl.kubernetes.io/last-applied-configuration": applied},
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "tagger.dev/v1alpha1",
					Time: &ts, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(
						`{"f:metadata":{"f:annotations":{".":{},"f:kubectl.kubernetes.io/last-applied-configuration":{}}},"f:spec":{".":{},"f:historyLimit":{},"f:image":{}}}`)},
				{Manager: "tagger-controller", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "tagger.dev/v1alpha1",
					Time: &ts, FieldsType: "FieldsV1", Subresource: "status", FieldsV1: metav1.NewFieldsV1(
						`{"f:status":{".":{},"f:cachedServed":{},"f:conditions":{".":{},"k:{\"type\":\"Cached\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:observedGeneration":{},"f:reason":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Ready\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:observedGeneration":{},"f:reason":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Resolved\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:observedGeneration":{},"f:reason":{},"f:status":{},"f:type":{}}},"f:generations":{},"f:image":{},"f:lastCheck":{".":{},"f:result":{},"f:time":{}},"f:latestGeneration":{},"f:observedGeneration":{},"f:servedDigest":{},"f:servedGeneration":{},"f:servedShortDigest":{}}}`)},
			},
		},
		Spec:   v1alpha1.TagSpec{Image: image, HistoryLimit: v1alpha1.DefaultHistoryLimit},
		Status: status,
	}
}

func synthUID(i int) types.UID {
	s := sha256.Sum256(fmt.Appendf(nil, "uid/%d", i))
	h := hex.EncodeToString(s[:16])
	return types.UID(h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32])
}

// runMemory runs the mem subcommand in fresh processes.
func runMemory(ctx context.Context, c *config) ([]memRunResults, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	type cfg struct {
		name string
		args []string
	}
	n := strconv.Itoa(c.pins)
	cfgs := []cfg{
		{"table only (3 generations per Tag)", []string{"-pins", n, "-generations", "3"}},
		{"table + Tags (3 generations)", []string{"-pins", n, "-generations", "3", "-keep-tags"}},
		{"table + slim Tags (node agent's transform; 3 generations before it)", []string{"-pins", n, "-generations", "3", "-keep-tags", "-trim"}},
	}
	if w := c.memGenerationsWorst; w > 0 {
		cfgs = append(cfgs, cfg{fmt.Sprintf("table + Tags (%d generations)", w),
			[]string{"-pins", n, "-generations", strconv.Itoa(w), "-keep-tags"}})
		cfgs = append(cfgs, cfg{fmt.Sprintf("table + slim Tags (node agent's transform; %d generations before it)", w),
			[]string{"-pins", n, "-generations", strconv.Itoa(w), "-keep-tags", "-trim"}})
	}
	var out []memRunResults
	for _, cf := range cfgs {
		mr := memRunResults{Name: cf.name}
		for range c.repeat {
			cmd := exec.CommandContext(ctx, exe, append([]string{"mem"}, cf.args...)...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			cmd.Stderr = os.Stderr
			b, err := cmd.Output()
			if err != nil {
				return nil, fmt.Errorf("mem %v: %w", cf.args, err)
			}
			var r memResult
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("mem %v: %w: %s", cf.args, err, b)
			}
			mr.Runs = append(mr.Runs, r)
		}
		med := medianBy(mr.Runs, func(r memResult) float64 { return float64(r.After.RSS) })
		logf("memory, %s: RSS %s (baseline %s), heap %s", cf.name, mib(int64(med)),
			mib(mr.Runs[0].Baseline.RSS), mib(int64(medianBy(mr.Runs, func(r memResult) float64 { return float64(r.After.HeapAlloc) }))))
		out = append(out, mr)
	}
	return out, nil
}
