package integration

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/controller/restart"
)

// TestRolloutRestart: with spec.rollout.restart, a change of the served
// generation restarts the Deployments using the image (pod-template
// annotation), and only after the first, baseline generation.
func TestRolloutRestart(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	image := up.Host() + "/roll/app:v1"
	gen1 := up.PushImage(t, "roll/app", "v1", rig.ImageOptions{})

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rollout-it"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	dep := func(name, img string) *appsv1.Deployment {
		labels := map[string]string{"app": name}
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: name},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: img}}},
				},
			},
		}
	}
	// Which workloads a wave selects, and that others are not written at
	// all, is test/rollout's TestRestart; here one workload shows the wiring.
	using := dep("uses-app", image)
	if err := c.Create(ctx, using); err != nil {
		t.Fatal(err)
	}

	tag := rig.NewTag("roll", image)
	tag.Spec.Rollout = &v1alpha1.RolloutSpec{Restart: true}
	rig.CreateTag(t, c, tag)
	rig.WaitTag(t, c, "roll", "generation 1 baseline", func(tg *v1alpha1.Tag) (bool, string) {
		return tg.Status.ServedDigest == gen1.Digest.String() && tg.Status.RolledOutGeneration == 1, "want baseline 1"
	})
	restartedFor := func(d *appsv1.Deployment) string {
		var got appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKeyFromObject(d), &got); err != nil {
			t.Fatal(err)
		}
		return got.Spec.Template.Annotations[restart.RestartedForAnnotation]
	}
	if got := restartedFor(using); got != "" {
		t.Fatalf("the baseline generation restarted %s: %q", using.Name, got)
	}

	gen2 := up.PushImage(t, "roll/app", "v1", rig.ImageOptions{})
	rig.RequestCheck(t, c, "roll", "moved")
	rig.WaitTag(t, c, "roll", "rolled out generation 2", func(tg *v1alpha1.Tag) (bool, string) {
		return tg.Status.ServedDigest == gen2.Digest.String() && tg.Status.RolledOutGeneration == 2, fmt.Sprint("rolledOut ", tg.Status.RolledOutGeneration)
	})
	if got := restartedFor(using); got != "roll/2" {
		t.Fatalf("%s restarted-for = %q, want roll/2", using.Name, got)
	}

	// Rollback is one field, and it reaches the workloads too.
	setGeneration(t, c, "roll", ptr(int64(1)))
	rig.WaitTag(t, c, "roll", "rolled out generation 1", func(tg *v1alpha1.Tag) (bool, string) {
		return tg.Status.ServedGeneration == 1 && tg.Status.RolledOutGeneration == 1, fmt.Sprint("rolledOut ", tg.Status.RolledOutGeneration)
	})
	if got := restartedFor(using); got != "roll/1" {
		t.Fatalf("%s restarted-for after rollback = %q, want roll/1", using.Name, got)
	}
}
